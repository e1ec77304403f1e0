"""The ``ftstudio`` command: setup, up, web, worker, migrate, token, user."""

from __future__ import annotations

import argparse
import getpass
import os
import signal
import subprocess
import sys

from app.settings import get_settings, private_umask

BUNDLED_MODEL = "SmolLM2-135M-Instruct"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ftstudio", description="Fine-tuning studio")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("setup", help="migrate the database and install the bundled model (idempotent)")
    sub.add_parser("migrate", help="upgrade the database to the latest schema")
    for name, text in (("up", "web + workers, one command"), ("web", "the web server only")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=8000)
        if name == "up":
            p.add_argument(
                "--gpus-per-worker",
                type=int,
                default=None,
                help="share the host's GPUs out: one worker per group of N GPUs (1: one per "
                "GPU); 0: one worker owning FTSTUDIO_WORKER_DEVICES (default: "
                "FTSTUDIO_GPUS_PER_WORKER, else 0)",
            )
    worker = sub.add_parser("worker", help="a Celery worker that runs training jobs")
    worker.add_argument("--queues", default=None, help="comma-separated queues (default: settings)")
    worker.add_argument(
        "--devices",
        default=None,
        help="the devices this worker owns: auto (every GPU it sees, else the CPU), cpu, or CUDA "
        "indices such as 0 or 0,1; its training processes see only those "
        "(default: FTSTUDIO_WORKER_DEVICES, else auto)",
    )
    worker.add_argument(
        "--device-class",
        default=None,
        help="the device class the worker registers (default: FTSTUDIO_WORKER_DEVICE_CLASS, "
        "else the detected device name)",
    )

    token = sub.add_parser("token", help="API tokens").add_subparsers(
        dest="token_command", required=True
    )
    create = token.add_parser("create", help="create a token (and the user if missing)")
    create.add_argument("--user", required=True)
    create.add_argument("--admin", action="store_true")
    create.add_argument("--label", default="cli")
    create.add_argument("--expires-days", type=float, default=None, help="default: never")
    listing = token.add_parser("list", help="list tokens (never the tokens themselves)")
    listing.add_argument("--user", default=None)
    revoke = token.add_parser("revoke", help="delete a token by its id (from `token list`)")
    revoke.add_argument("id", type=int)

    user = sub.add_parser("user", help="users").add_subparsers(dest="user_command", required=True)
    password = user.add_parser(
        "password", help="set a user's password (read from stdin or a prompt)"
    )
    password.add_argument("name")
    password.add_argument("--admin", action="store_true")
    return parser


def cmd_migrate() -> None:
    from app.migrate import upgrade_to_head

    upgrade_to_head()
    print("database is at the latest schema")


def cmd_setup() -> None:
    settings = get_settings()
    settings.ensure_dirs()
    cmd_migrate()
    if not (settings.bundled_model_dir / ".complete").exists():
        # The conversion needs torch, which the web side never imports: the worker package does it.
        subprocess.run(
            [sys.executable, "-m", "worker.bundled_model", str(settings.bundled_models_dir)],
            check=True,
        )
    register_bundled_model()


def register_bundled_model() -> None:
    from app.base_models import register_model
    from app.db import session_scope

    settings = get_settings()
    if not (settings.bundled_model_dir / ".complete").exists():
        print(f"no bundled model in {settings.bundled_models_dir} yet: run `ftstudio setup`")
        return
    with session_scope() as session:
        model = register_model(session, BUNDLED_MODEL, settings.bundled_model_dir, "bundled")
        print(f"base model '{model.name}' is registered (id {model.id})")


def create_token_for(
    name: str, *, admin: bool, label: str, expires_days: float | None = None
) -> str:
    from datetime import timedelta

    from app.auth import create_token, get_or_create_user
    from app.db import session_scope

    expires = timedelta(days=expires_days) if expires_days is not None else None
    with session_scope() as session:
        user = get_or_create_user(session, name, admin=admin)
        return create_token(session, user, label, expires_in=expires)


def cmd_token(args: argparse.Namespace) -> None:
    from app.auth import list_tokens, revoke_token
    from app.db import session_scope

    if args.token_command == "create":
        token = create_token_for(
            args.user, admin=args.admin, label=args.label, expires_days=args.expires_days
        )
        print(f"token for user '{args.user}'{' (admin)' if args.admin else ''}:")
        print(token)
        return
    with session_scope() as session:
        if args.token_command == "revoke":
            if not revoke_token(session, args.id):
                sys.exit(f"no token with id {args.id}")
            print(f"token {args.id} revoked")
            return
        for token, owner in list_tokens(session, args.user):
            print(
                f"{token.id}\t{owner}\t{token.label or '-'}\tcreated {token.created_at:%Y-%m-%d}"
                f"\tlast used {token.last_used_at or 'never'}"
                f"\texpires {token.expires_at or 'never'}"
            )


def admin_token() -> str:
    """The token `ftstudio up` prints: the one it made before (kept 0600 in the data dir) while
    it still works, else a new one; never a new token at every start."""
    from app.auth import token_usable
    from app.db import session_scope

    path = get_settings().data_dir / "admin_token"
    if path.exists():
        kept = path.read_text().strip()
        with session_scope() as session:
            if token_usable(session, kept):
                return kept
    token = create_token_for("admin", admin=True, label="ftstudio up")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def cmd_user_password(args: argparse.Namespace) -> None:
    from app.auth import get_or_create_user, set_password
    from app.db import session_scope

    password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().strip()
    if len(password) < 8:
        sys.exit("a password needs at least 8 characters")
    with session_scope() as session:
        set_password(session, get_or_create_user(session, args.name, admin=args.admin), password)
    print(f"password set for '{args.name}'")


def worker_command(queues: str | None = None, index: int | None = None) -> list[str]:
    """The Celery worker command line; ``index`` tells apart several workers one process starts
    (their node names must differ)."""
    settings = get_settings()
    node = f"ftstudio-{os.getpid()}" + ("" if index is None else f"-{index}")
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery_app",
        "worker",
        "--queues",
        queues or settings.queue,
        "--concurrency",
        "1",
        "--pool",
        "solo",
        "--loglevel",
        "INFO",
        "--hostname",
        f"{node}@%h",
    ]


def worker_environment(devices: str | None, device_class: str | None) -> dict[str, str]:
    """The FTSTUDIO_* variables ``--devices``/``--device-class`` set for the worker process
    (checked here, so a bad value stops the command before Celery starts)."""
    from app.worker_registry import parse_devices

    env: dict[str, str] = {}
    if devices is not None:
        try:
            parse_devices(devices)
        except ValueError as exc:
            sys.exit(str(exc))
        env["FTSTUDIO_WORKER_DEVICES"] = devices.strip().lower()
    if device_class is not None:
        env["FTSTUDIO_WORKER_DEVICE_CLASS"] = device_class
    return env


def cmd_worker(args: argparse.Namespace) -> None:
    os.environ.update(worker_environment(args.devices, args.device_class))
    os.execv(sys.executable, worker_command(args.queues))


# A handler doing pure-Python work (a page of 20k token spans) keeps the GIL for up to the switch
# interval each time another thread asks for it; a quick request (/healthz: a database and a
# broker round trip) asks dozens of times, so at Python's default 5 ms it waited 150-300 ms.
WEB_SWITCH_INTERVAL_SECONDS = 0.001


def serve(host: str, port: int) -> None:
    import uvicorn

    sys.setswitchinterval(WEB_SWITCH_INTERVAL_SECONDS)

    uvicorn.run("app.main:create_app", factory=True, host=host, port=port, log_level="info")


def _die_with_parent() -> None:
    """Linux: the worker gets SIGTERM when `ftstudio up` exits, however it exits.

    uvicorn re-raises the signal that stopped it, so a `finally` in the parent is not enough.
    """
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def host_gpu_count() -> int:
    """CUDA devices on this host, asked of torch in a child (CUDA stays uninitialised here)."""
    probe = "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    return int(done.stdout.strip() or 0) if done.returncode == 0 else 0


def start_workers(gpus_per_worker: int) -> list[subprocess.Popen]:
    """One worker owning the configured devices, or (``gpus_per_worker`` > 0 on a GPU host) one
    per group of that many GPUs; each dies with this process."""
    from app.worker_registry import share_out

    plan = share_out(host_gpu_count(), gpus_per_worker) if gpus_per_worker > 0 else []
    if not plan:
        return [subprocess.Popen(worker_command(), preexec_fn=_die_with_parent)]
    workers = []
    for index, devices in enumerate(plan):
        env = {**os.environ, **worker_environment(devices, None)}
        command = worker_command(index=index)
        workers.append(subprocess.Popen(command, env=env, preexec_fn=_die_with_parent))
        print(f"  worker {index}: GPUs {devices}", flush=True)
    return workers


def cmd_up(args: argparse.Namespace) -> None:
    cmd_migrate()
    register_bundled_model()
    token = admin_token()
    per_worker = args.gpus_per_worker
    workers = start_workers(get_settings().gpus_per_worker if per_worker is None else per_worker)
    print(f"\n  ftstudio is running at http://{args.host}:{args.port}/")
    print(f"  data directory: {get_settings().data_dir}")
    print(f"  log in with this token (user 'admin'):\n  {token}\n", flush=True)
    try:
        serve(args.host, args.port)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    private_umask()  # the database, logs, uploads and checkpoints: the studio's user's alone
    match args.command:
        case "setup":
            cmd_setup()
        case "migrate":
            cmd_migrate()
        case "up":
            cmd_up(args)
        case "web":
            serve(args.host, args.port)
        case "worker":
            cmd_worker(args)
        case "token":
            cmd_token(args)
        case "user":
            cmd_user_password(args)


if __name__ == "__main__":
    main()
