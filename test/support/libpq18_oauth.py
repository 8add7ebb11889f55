"""A libpq 18 client for the OAuth door, for the tests.

libpq 18 speaks SASL OAUTHBEARER; its builtin device flow lives in the
separate libpq-oauth module, which this machine does not have. So this
client installs the flow itself through libpq's documented hook
(PQsetAuthDataHook, PQAUTHDATA_OAUTH_BEARER_TOKEN), doing over HTTP what the
builtin flow does: the discovery document, the device authorization
request, then polling the token endpoint. libpq does the rest: the
discovery round trip with the server, the retry with the token. psycopg's
binary wheel bundles libpq 18; the hook is set on that very library.

Usage: python libpq18_oauth.py "<conninfo>"
Environment: OAUTH_TOKEN (skip the flow and present this token),
OAUTH_POLL_AT_ONCE=1 (poll twice right away: the second is too fast, slow_down).
Reads SQL statements from stdin, one per line, and writes one JSON object
per event to stdout.
"""

import ctypes
import glob
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import psycopg

PQAUTHDATA_OAUTH_BEARER_TOKEN = 1  # enum PGauthData: PROMPT_OAUTH_DEVICE = 0, OAUTH_BEARER_TOKEN = 1


def emit(event, **fields):
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def bundled_libpq():
    """The libpq psycopg itself uses (the wheel's), already loaded by the import."""
    libs = os.path.join(os.path.dirname(psycopg.__file__), "..", "psycopg_binary.libs")
    found = sorted(glob.glob(os.path.join(libs, "libpq*.so*")))
    if not found:
        raise SystemExit("psycopg's binary wheel has no bundled libpq: install psycopg[binary]")
    return ctypes.CDLL(found[0])


class BearerRequest(ctypes.Structure):
    """PGoauthBearerRequest (libpq-fe.h, PostgreSQL 18)."""

    _fields_ = [
        ("openid_configuration", ctypes.c_char_p),
        ("scope", ctypes.c_char_p),
        ("async_", ctypes.c_void_p),
        ("cleanup", ctypes.c_void_p),
        ("token", ctypes.c_void_p),
        ("user", ctypes.c_void_p),
    ]


def http_json(url, form=None):
    """GET (or POST a form) and return (status, JSON body)."""
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    request = urllib.request.Request(url, data=data, headers={"Accept": "application/json"})
    if data is not None:
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def device_flow(discovery_url, scope):
    status, metadata = http_json(discovery_url)
    if status != 200:
        raise RuntimeError(f"discovery answered {status}: {metadata}")
    emit("discovered", issuer=metadata.get("issuer"), metadata=metadata)
    form = {"client_id": "psql"}
    if scope:
        form["scope"] = scope
    status, grant = http_json(metadata["device_authorization_endpoint"], form)
    if status != 200:
        raise RuntimeError(f"device authorization answered {status}: {grant}")
    emit(
        "code",
        user_code=grant["user_code"],
        verification_uri=grant["verification_uri"],
        interval=grant["interval"],
        expires_in=grant["expires_in"],
    )
    interval = grant["interval"]
    # OAUTH_POLL_AT_ONCE=1: the first two polls without waiting (the second is too fast).
    at_once = 2 if os.environ.get("OAUTH_POLL_AT_ONCE") == "1" else 0
    token_form = {
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
        "device_code": grant["device_code"],
        "client_id": "psql",
    }
    deadline = time.monotonic() + grant["expires_in"]
    while time.monotonic() < deadline:
        if at_once:
            at_once -= 1
        else:
            time.sleep(interval)
        status, answer = http_json(metadata["token_endpoint"], token_form)
        if status == 200:
            emit("token", token_type=answer.get("token_type"), expires_in=answer.get("expires_in"))
            return answer["access_token"]
        error = answer.get("error") if isinstance(answer, dict) else None
        emit("poll", status=status, error=error)
        if error == "authorization_pending":
            continue
        if error == "slow_down":
            interval += 5
            continue
        raise RuntimeError(f"the token endpoint answered {status}: {error}")
    raise RuntimeError("the code expired while waiting")


def main():
    conninfo = sys.argv[1]
    libpq = bundled_libpq()
    emit("libpq", version=libpq.PQlibVersion())
    hook_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
    libpq.PQdefaultAuthDataHook.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    libpq.PQdefaultAuthDataHook.restype = ctypes.c_int
    kept = []

    def hook(kind, conn, data):
        if kind != PQAUTHDATA_OAUTH_BEARER_TOKEN:
            return libpq.PQdefaultAuthDataHook(kind, conn, data)
        request = BearerRequest.from_address(data)
        discovery = (request.openid_configuration or b"").decode()
        scope = (request.scope or b"").decode()
        emit("hook", openid_configuration=discovery, scope=scope)
        try:
            token = os.environ.get("OAUTH_TOKEN") or device_flow(discovery, scope)
        except Exception as error:  # the flow failed: libpq reports it
            emit("flow_failed", error=str(error))
            return -1
        buffer = ctypes.create_string_buffer(token.encode())
        kept.append(buffer)  # libpq reads it until the connection is made
        request.token = ctypes.addressof(buffer)
        return 1

    callback = hook_type(hook)
    kept.append(callback)
    libpq.PQsetAuthDataHook(callback)

    try:
        connection = psycopg.connect(conninfo, autocommit=True)
    except psycopg.Error as error:
        emit("connect_failed", error=str(error))
        return 1
    emit("connected", server_version=connection.info.server_version)
    for line in sys.stdin:
        statement = line.strip()
        if not statement:
            continue
        try:
            with connection.cursor() as cursor:
                cursor.execute(statement)
                rows = cursor.fetchall() if cursor.description else []
            emit("result", rows=[[str(v) for v in row] for row in rows])
        except psycopg.Error as error:
            emit("error", error=str(error))
            if connection.closed:
                emit("closed")
                return 0
    connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
