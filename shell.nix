# A Nix shell with everything the toolkit uses: Node 20, PostgreSQL 15 with
# pgTAP, and PostgREST 12. Pinned to one nixpkgs release, so everyone gets
# the same versions:
#
#   nix-shell            # then: npm ci && npm start / npm test
#
# The toolkit finds PostgreSQL through PG_BIN and PostgREST through
# POSTGREST_BIN, both set below, instead of the npm-packaged binaries.
let
  # The nixpkgs 24.05 release tag. The hash pins its content: update the URL
  # and hash together (nix-prefetch-url --unpack <url> prints the new hash).
  nixpkgs = builtins.fetchTarball {
    url = "https://github.com/NixOS/nixpkgs/archive/refs/tags/24.05.tar.gz";
    sha256 = "1lr1h35prqkd1mkmzriwlpvxcb34kmhc9dnr48gkm8hh089hifmx";
  };
  pkgs = import nixpkgs { };
  postgresql = pkgs.postgresql_15.withPackages (p: [ p.pgtap ]);
in
pkgs.mkShell {
  packages = [
    pkgs.nodejs_20
    postgresql
    pkgs.postgrest
    pkgs.chromium
  ];
  shellHook = ''
    export PG_BIN=${postgresql}/bin
    export POSTGREST_BIN=${pkgs.postgrest}/bin/postgrest
    export CHROMIUM_PATH=${pkgs.chromium}/bin/chromium
  '';
}
