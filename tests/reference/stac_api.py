"""A real STAC API on loopback for the monitor tests: a throw-away PostgreSQL 15 + PostGIS cluster
with pgstac (pypgstac 0.10.0) and stac-fastapi-pgstac 7.2.0 under uvicorn.

    .venv-stacapi/bin/python tests/reference/stac_api.py WORKDIR COLLECTION.json ITEMS.ndjson
        Creates the cluster in WORKDIR/data (owned by postgres when run as root, `initdb -A
        trust`), starts it on a free 127.0.0.1 port with its socket in WORKDIR, creates the
        database `stac` (postgis, btree_gist), migrates pgstac, loads the collection(s) and the
        items, starts uvicorn on another free 127.0.0.1 port, waits until GET /collections
        answers, then prints one JSON line to stdout:
            {"url": "http://127.0.0.1:PORT", "pg_port": N}
        and runs until SIGTERM/SIGINT, or until its stdin closes when stdin is a pipe (so a test
        that dies without stopping it still takes the servers down: spawn it with a piped stdin
        and keep the write end open). Then stops uvicorn, stops the cluster (`pg_ctl stop -m
        fast`) and removes WORKDIR/data. Logs: WORKDIR/postgres.log, WORKDIR/uvicorn.log.
        Exit status 0 after a clean stop, 1 when start-up failed (the reason on stderr).

    .venv-stacapi/bin/python tests/reference/stac_api.py --add PG_PORT WORKDIR ITEMS.ndjson
        Loads more items (method upsert) into the running database; they are visible to the
        next search at once.

Needs /usr/lib/postgresql/15/bin (Debian's postgresql-15, postgresql-15-postgis-3) and the
environment from tests/reference/stacapi-requirements.txt (scripts/setup.sh --reference).
"""

import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.request

PG_BIN = os.environ.get("EOINFER_PG_BIN", "/usr/lib/postgresql/15/bin")
DB = "stac"
T0 = time.monotonic()


def log(msg):
    print(f"stac_api [{time.monotonic() - T0:6.2f}s] {msg}", file=sys.stderr, flush=True)


def as_postgres(cmd):
    """Runs the PostgreSQL tools as `postgres` when we are root (initdb refuses root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--"] + cmd
    return cmd


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dsn(port, db=DB):
    return f"postgresql://postgres@127.0.0.1:{port}/{db}"


def run(cmd, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}")
    return r.stdout


def load(port, table, path, method):
    from pypgstac.db import PgstacDB
    from pypgstac.load import Loader, Methods

    with PgstacDB(dsn=dsn(port)) as db:
        loader = Loader(db=db)
        if table == "collections":
            loader.load_collections(path, Methods(method))
        else:
            loader.load_items(path, Methods(method))


class Stack:
    def __init__(self, workdir):
        self.workdir = os.path.abspath(workdir)
        self.data = os.path.join(self.workdir, "data")
        self.pg_port = None
        self.pg_started = False
        self.uvicorn = None
        self.uvicorn_log = None

    # -- PostgreSQL -------------------------------------------------------------------------
    def start_cluster(self):
        os.makedirs(self.workdir, exist_ok=True)
        if os.path.exists(self.data):
            shutil.rmtree(self.data)
        if os.geteuid() == 0:
            pg = pwd.getpwnam("postgres")
            os.chown(self.workdir, pg.pw_uid, pg.pw_gid)
            # postgres must be able to reach WORKDIR: a test's temporary directory is often
            # 0700 root; give its ancestors search permission (x only, no listing).
            d = os.path.dirname(self.workdir)
            while d != "/":
                st = os.stat(d)
                if not st.st_mode & stat.S_IXOTH:
                    os.chmod(d, stat.S_IMODE(st.st_mode) | stat.S_IXOTH)
                    log(f"chmod o+x {d} (for postgres)")
                d = os.path.dirname(d)
        sock = os.path.join(self.workdir, ".s.PGSQL.65535")
        if len(sock.encode()) > 107:
            raise RuntimeError(f"WORKDIR is too long for a Unix socket path: {self.workdir}")
        # -N: no fsync at initdb; the server runs with fsync off too (throw-away data).
        run(as_postgres([f"{PG_BIN}/initdb", "-D", self.data, "-A", "trust", "-U", "postgres",
                         "-E", "UTF8", "--no-locale", "-N"]))
        log("initdb done")
        pglog = os.path.join(self.workdir, "postgres.log")
        for attempt in range(5):
            self.pg_port = free_port()
            opts = (f"-p {self.pg_port} -k {self.workdir} -c listen_addresses=127.0.0.1 "
                    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
            r = subprocess.run(as_postgres([f"{PG_BIN}/pg_ctl", "-D", self.data, "-o", opts,
                                            "-l", pglog, "-w", "-t", "60", "start"]),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if r.returncode == 0:
                self.pg_started = True
                break
            # a port taken between free_port() and the bind: try another one
            with open(pglog, errors="replace") as f:
                tail = f.read()[-2000:]
            if "could not bind" not in tail and "already in use" not in tail:
                raise RuntimeError(f"pg_ctl start failed:\n{r.stdout}\n{tail}")
        else:
            raise RuntimeError("pg_ctl start failed 5 times (ports in use)")
        log(f"postgres up on 127.0.0.1:{self.pg_port}")

        import psycopg

        with psycopg.connect(dsn(self.pg_port, "postgres"), autocommit=True) as c:
            c.execute(f"CREATE DATABASE {DB}")

    def migrate(self):
        import psycopg

        with psycopg.connect(dsn(self.pg_port), autocommit=True) as c:
            c.execute("CREATE EXTENSION postgis")
            c.execute("CREATE EXTENSION btree_gist")
        log("database and extensions created")

        from pypgstac.db import PgstacDB
        from pypgstac.migrate import Migrate

        with PgstacDB(dsn=dsn(self.pg_port)) as db:
            version = Migrate(db).run_migration()
        log(f"pgstac {version} migrated")

    def stop_cluster(self):
        if self.pg_started:
            subprocess.run(as_postgres([f"{PG_BIN}/pg_ctl", "-D", self.data, "-m", "fast",
                                        "-w", "stop"]),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.pg_started = False
        shutil.rmtree(self.data, ignore_errors=True)

    # -- stac-fastapi -------------------------------------------------------------------------
    def start_uvicorn(self):
        self.api_port = free_port()
        env = dict(os.environ)
        env.update({
            # stac-fastapi-pgstac 7.x reads PG*; the POSTGRES_* names are for older releases.
            "PGUSER": "postgres", "PGPASSWORD": "unused", "PGHOST": "127.0.0.1",
            "PGPORT": str(self.pg_port), "PGDATABASE": DB,
            "POSTGRES_USER": "postgres", "POSTGRES_PASS": "unused", "POSTGRES_DBNAME": DB,
            "POSTGRES_HOST_READER": "127.0.0.1", "POSTGRES_HOST_WRITER": "127.0.0.1",
            "POSTGRES_PORT": str(self.pg_port),
            "STAC_FASTAPI_TITLE": "eoinfer test STAC API",
            "STAC_FASTAPI_DESCRIPTION": "throw-away pgstac for the monitor tests",
            "STAC_FASTAPI_LANDING_ID": "eoinfer-test", "STAC_FASTAPI_VERSION": "7.2.0",
        })
        self.uvicorn_log = open(os.path.join(self.workdir, "uvicorn.log"), "ab")
        # cwd=WORKDIR: pydantic-settings would read a .env file from the working directory.
        self.uvicorn = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "stac_fastapi.pgstac.app:create_app", "--factory",
             "--host", "127.0.0.1", "--port", str(self.api_port), "--log-level", "warning"],
            cwd=self.workdir, env=env, stdin=subprocess.DEVNULL, stdout=self.uvicorn_log,
            stderr=subprocess.STDOUT)

    def wait_uvicorn(self, timeout=60):
        url = f"http://127.0.0.1:{self.api_port}/collections"
        deadline = time.monotonic() + timeout
        restarts = 0
        while True:
            if self.uvicorn.poll() is not None:
                if "address already in use" in self.tail("uvicorn.log").lower() and restarts < 3:
                    # the port was taken between free_port() and uvicorn's bind
                    restarts += 1
                    self.uvicorn_log.close()
                    os.truncate(os.path.join(self.workdir, "uvicorn.log"), 0)
                    self.start_uvicorn()
                    url = f"http://127.0.0.1:{self.api_port}/collections"
                    continue
                raise RuntimeError(f"uvicorn exited ({self.uvicorn.returncode}), see "
                                   f"{self.workdir}/uvicorn.log:\n{self.tail('uvicorn.log')}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        json.load(r)
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"GET {url} did not answer within {timeout}s")
            time.sleep(0.05)
        log(f"uvicorn answers on 127.0.0.1:{self.api_port}")

    def stop_uvicorn(self):
        if self.uvicorn is not None and self.uvicorn.poll() is None:
            self.uvicorn.terminate()
            try:
                self.uvicorn.wait(10)
            except subprocess.TimeoutExpired:
                self.uvicorn.kill()
                self.uvicorn.wait()
        if self.uvicorn_log is not None:
            self.uvicorn_log.close()

    def tail(self, name):
        try:
            with open(os.path.join(self.workdir, name), errors="replace") as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def stop(self):
        self.stop_uvicorn()
        log("uvicorn stopped")
        self.stop_cluster()
        log("cluster stopped, data removed")


def serve(workdir, collection, items):
    collection, items = os.path.abspath(collection), os.path.abspath(items)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    stack = Stack(workdir)
    try:
        stack.start_cluster()
        # uvicorn's start-up only opens a connection pool to the database (no pgstac query):
        # it imports (the slowest part) while the schema and the data load.
        stack.start_uvicorn()
        stack.migrate()
        load(stack.pg_port, "collections", collection, "insert_ignore")
        load(stack.pg_port, "items", items, "upsert")
        log("collection and items loaded")
        stack.wait_uvicorn()
    except BaseException as e:  # noqa: BLE001 (stop what was started, whatever happened)
        stack.stop()
        if isinstance(e, KeyboardInterrupt):
            return 1
        print(f"stac_api: start-up failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return 1
    if stop.is_set():  # a signal during start-up
        stack.stop()
        return 0

    mode = os.fstat(0).st_mode
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        def watch_stdin():
            while os.read(0, 4096):
                pass
            stop.set()
        threading.Thread(target=watch_stdin, daemon=True).start()

    print(json.dumps({"url": f"http://127.0.0.1:{stack.api_port}", "pg_port": stack.pg_port}),
          flush=True)
    status = 0
    while not stop.wait(0.2):
        if stack.uvicorn.poll() is not None:
            print(f"stac_api: uvicorn exited ({stack.uvicorn.returncode}):\n"
                  f"{stack.tail('uvicorn.log')}", file=sys.stderr, flush=True)
            status = 1
            break
    stack.stop()
    log("stopped")
    return status


def main(argv):
    if len(argv) == 5 and argv[1] == "--add":
        port, workdir, items = int(argv[2]), argv[3], argv[4]
        if not os.path.isdir(workdir):
            print(f"stac_api --add: no such WORKDIR {workdir}", file=sys.stderr)
            return 1
        load(port, "items", os.path.abspath(items), "upsert")
        log(f"items from {items} upserted")
        return 0
    if len(argv) == 4 and not argv[1].startswith("-"):
        return serve(*argv[1:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
