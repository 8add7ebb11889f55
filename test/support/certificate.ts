// A throwaway self-signed certificate (P-256, one day) made with openssl.

import { execFileSync } from "node:child_process";

export function selfSignedCertificate(
  commonName: string,
  paths: { key: string; cert: string },
): void {
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-subj",
      `/CN=${commonName}`,
      "-days",
      "1",
      "-keyout",
      paths.key,
      "-out",
      paths.cert,
    ],
    { stdio: "ignore" },
  );
}
