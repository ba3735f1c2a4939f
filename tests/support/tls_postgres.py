"""A throwaway PostgreSQL that only accepts TLS: a CA and a server certificate for ``localhost``/127.0.0.1
made with ``cryptography``, a cluster listening on 127.0.0.1 and a free port with ``ssl = on``, and a pg_hba
that rejects plain connections and wants a SCRAM password over TLS. As root the server runs as pgserver's
unprivileged user (initdb refuses root), as ``cdcwh.source.cluster`` does.

The pgserver wheel's binaries are built without OpenSSL, so the cluster uses PostgreSQL binaries that have
it: ``CDCWH_TEST_PG_BINDIR`` when set, else the ``initdb`` on the PATH (Debian's ``postgresql`` package on the
project's machines); ``ssl_binaries()`` is None when there are none, and the TLS tests skip saying so."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cdcwh.embedded.broker import free_port
from cdcwh.source.cluster import OS_USER

BINDIR_ENV = "CDCWH_TEST_PG_BINDIR"

HOST = "127.0.0.1"
SUPERUSER = "postgres"


@dataclass(frozen=True)
class TlsPostgres:
    port: int
    password: str  # the superuser's
    ca: Path  # the CA that signed the server certificate
    wrong_ca: Path  # a CA that did not

    def dsn(
        self,
        *,
        user: str = SUPERUSER,
        password: str | None = None,
        ca: Path | None = None,
        sslmode: str = "verify-full",
        host: str = "localhost",
    ) -> str:
        """A DSN for ``user`` (default: the superuser and its password), verifying against ``ca``."""
        return psycopg.conninfo.make_conninfo(
            host=host,
            port=self.port,
            user=user,
            password=password if password is not None else self.password,
            dbname="postgres",
            sslmode=sslmode,
            sslrootcert=str(ca or self.ca),
        )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_ca(directory: Path, name: str) -> tuple[Path, ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{name}.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, key, cert


def make_server_cert(
    directory: Path, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate
) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(_pem_key(key))
    key_path.chmod(0o600)  # postgres refuses a key others can read
    return cert_path, key_path


def ssl_binaries() -> Path | None:
    """A directory of PostgreSQL server binaries built with OpenSSL (``pg_config --configure`` says so)."""
    configured = os.environ.get(BINDIR_ENV)
    initdb = Path(configured) / "initdb" if configured else shutil.which("initdb")
    if initdb is None:
        return None
    bindir = Path(initdb).resolve().parent
    pg_config = bindir / "pg_config"
    if not pg_config.exists():
        return None
    configure = subprocess.run(  # noqa: S603 - a binary found above
        [str(pg_config), "--configure"], capture_output=True, text=True, check=False
    ).stdout
    return bindir if "--with-openssl" in configure else None


@contextlib.contextmanager
def tls_postgres(base: Path, binaries: Path) -> Iterator[TlsPostgres]:
    """Start the cluster under ``base`` with the server binaries in ``binaries``; stop it (fast) on exit."""
    base.mkdir(parents=True, exist_ok=True)
    certs = base / "certs"
    certs.mkdir()
    ca, ca_key, ca_cert = make_ca(certs, "test-ca")
    wrong_ca, _, _ = make_ca(certs, "other-ca")
    pgdata, pwfile = base / "pgdata", base / "pwfile"
    password = os.urandom(12).hex()
    pwfile.write_text(password + "\n")
    user = None
    if os.geteuid() == 0:  # initdb refuses root: run as pgserver's unprivileged user
        from pgserver.utils import ensure_prefix_permissions, ensure_user_exists

        user = OS_USER
        ensure_user_exists(OS_USER)
        ensure_prefix_permissions(base)
        entry = pwd.getpwnam(OS_USER)
        for path in (base, certs, pwfile, *certs.iterdir()):
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def run(*command: str | Path) -> None:
        subprocess.run(  # noqa: S603 - the wheel's binaries, arguments built here
            [str(part) for part in command], check=True, user=user, cwd=base, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip

    run(binaries / "initdb", "-D", pgdata, "-U", SUPERUSER, f"--pwfile={pwfile}", "--auth=scram-sha-256",
        "--encoding=UTF8", "--locale=C")  # fmt: skip
    cert, key = make_server_cert(certs, ca_key, ca_cert)
    if user is not None:
        entry = pwd.getpwnam(user)
        for path in (cert, key):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    port = free_port()
    with (pgdata / "postgresql.conf").open("a") as conf:
        conf.write(
            f"listen_addresses = '{HOST}'\nport = {port}\nunix_socket_directories = ''\nssl = on\n"
            f"ssl_cert_file = '{cert}'\nssl_key_file = '{key}'\n"
        )
    (pgdata / "pg_hba.conf").write_text(
        f"hostssl all all {HOST}/32 scram-sha-256\nhostnossl all all {HOST}/32 reject\n"
    )
    log_path = base / "postgres.log"
    run(binaries / "pg_ctl", "-D", pgdata, "-l", log_path, "-w", "-t", "60", "start")
    try:
        server = TlsPostgres(port, password, ca, wrong_ca)
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(server.dsn(), connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            run(binaries / "pg_ctl", "-D", pgdata, "-w", "-m", "fast", "stop")
