"""The commands for running mapillaryd as a service: ``install-service``,
``uninstall-service``, ``doctor``, ``auth`` and ``logs``.

:func:`add_commands` adds them to the CLI's subparsers; :func:`dispatch` runs one (or returns
None for a command that is not one of these). Problems are raised as
:class:`daemon.errors.FatalError` subclasses; :mod:`daemon.cli` maps them to exit codes.
"""

from __future__ import annotations

import argparse
import getpass
import os
import pwd
import sys
from pathlib import Path
from typing import Any

from daemon import auth, doctor, install_service
from daemon.cli_args import config_arg
from daemon.config import Config, default_config_path, load_config
from daemon.errors import FatalError, UploadError

COMMANDS = ("install-service", "uninstall-service", "doctor", "auth", "logs")


class InstallError(FatalError):
    """The service cannot be installed as asked."""

    exit_code = 1


def _variant_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--user",
        dest="variant",
        action="store_const",
        const="user",
        help="a systemd user unit (default when not root)",
    )
    g.add_argument(
        "--system",
        dest="variant",
        action="store_const",
        const="system",
        help="a systemd system unit (default for root)",
    )
    g.add_argument(
        "--launchd",
        dest="variant",
        action="store_const",
        const="launchd",
        help="a launchd agent (default on macOS)",
    )
    p.add_argument("--dry-run", action="store_true", help="print what would be done, do nothing")


def add_commands(sub: Any) -> None:
    """Add this module's commands to ``sub`` (an ``add_subparsers()`` result)."""
    p = sub.add_parser(
        "install-service",
        help="install and start mapillaryd as a systemd service or launchd agent",
        description="Write the unit (or plist) for this installation's paths, then "
        "`systemctl daemon-reload && systemctl enable --now` (launchctl bootstrap on macOS).",
    )
    config_arg(p)
    _variant_args(p)
    p.add_argument(
        "--run-as",
        metavar="USER",
        help="the account of a --system unit "
        "(default: $SUDO_USER, else the current user; never root)",
    )
    p.add_argument(
        "--automount-cards",
        action="store_true",
        help="--system: also a udev rule + mount unit that mount cards on a Pi "
        "without a desktop (under /run/media/system/<label>)",
    )

    p = sub.add_parser("uninstall-service", help="stop and remove the service (keeps the queue)")
    _variant_args(p)

    p = sub.add_parser("doctor", help="check this machine for what would stop the daemon")
    config_arg(p)
    p.add_argument("--offline", action="store_true", help="skip the token and endpoint checks")

    p = sub.add_parser(
        "auth",
        help="check a user token with Mapillary and store it (0600) for the daemon",
        description="Reads the token from a prompt (or stdin when not a terminal), --token, or "
        "mapillary_tools' profiles; checks it with GET /me; writes it to --token-file, else "
        "[mapillary] token_file, else ~/.config/mapillaryd/token. A running daemon picks it "
        "up at its next upload: held uploads resume without a restart.",
    )
    config_arg(p)
    p.add_argument("--token-file", type=Path, help="where to store the token")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--token", help="the token itself (visible in `ps`: prefer the prompt)")
    src.add_argument(
        "--from-mapillary-tools",
        nargs="?",
        const="",
        metavar="PROFILE",
        help="import from mapillary_tools' profiles ($MAPILLARY_CONFIG_PATH or "
        "~/.config/mapillary/configs/…); name the profile if there are several",
    )
    p.add_argument("--no-check", action="store_true", help="store without asking Mapillary")

    p = sub.add_parser("logs", help="where the daemon's logs are, and the command to follow them")


def dispatch(args: argparse.Namespace) -> int | None:
    """Run the command in ``args`` if it is one of this module's; else return None."""
    if args.command not in COMMANDS:
        return None
    if args.command == "install-service":
        return cmd_install(args)
    if args.command == "uninstall-service":
        return cmd_uninstall(args)
    if args.command == "doctor":
        return cmd_doctor(load_config(args.config), offline=args.offline)
    if args.command == "auth":
        return cmd_auth(args)
    return cmd_logs()


# --- install-service ---------------------------------------------------------------------------


def _variant(args: argparse.Namespace) -> install_service.Variant:
    variant: install_service.Variant = args.variant or install_service.default_variant(
        sys.platform, os.geteuid()
    )
    return variant


def _service_env(variant: install_service.Variant, home: str) -> dict[str, str]:
    """The directory variables systemd will give the service, so the config resolves as the
    service will see it."""
    env = dict(os.environ)
    if variant == "system":
        env.update(STATE_DIRECTORY="/var/lib/mapillaryd", LOGS_DIRECTORY="/var/log/mapillaryd")
    elif variant == "user":
        state = os.environ.get("XDG_STATE_HOME") or f"{home}/.local/state"
        env.update(STATE_DIRECTORY=f"{state}/mapillaryd", LOGS_DIRECTORY=f"{state}/log/mapillaryd")
    return env


def build_install(
    args: argparse.Namespace, variant: install_service.Variant
) -> install_service.Install:
    """The :class:`~daemon.install_service.Install` for this interpreter and config."""
    config = (args.config or default_config_path(os.environ)).expanduser().absolute()
    if not config.is_file():
        raise InstallError(
            f"{config}: no configuration there. Write one first (config.example.toml documents "
            "every key), or name it with --config"
        )
    if variant == "system":
        user = args.run_as or os.environ.get("SUDO_USER") or getpass.getuser()
        if user == "root":
            raise InstallError(
                "install-service --system: name the account it runs as with "
                "--run-as USER (not root)"
            )
        try:
            home = pwd.getpwnam(user).pw_dir
        except KeyError:
            raise InstallError(f"--run-as {user}: no such user") from None
    else:
        user, home = getpass.getuser(), str(Path.home())
    env = _service_env(variant, home)
    cfg = load_config(config, env)
    managed = {env.get("STATE_DIRECTORY", ""), env.get("LOGS_DIRECTORY", "")}
    own = [
        p
        for p in (cfg.state.dir, cfg.state.spool_dir, cfg.state.log_dir)
        if not any(m and (str(p) == m or str(p).startswith(m + "/")) for m in managed)
    ]
    roots = [r.pattern for r in cfg.mounts.roots] if cfg.mounts.enabled else []
    return install_service.Install(
        python=sys.executable,
        config=str(config),
        user=user,
        home=home,
        writable=install_service.writable_paths(own, [w.path for w in cfg.watches], roots),
        automount_cards=bool(getattr(args, "automount_cards", False)),
    )


def cmd_install(args: argparse.Namespace) -> int:
    variant = _variant(args)
    if variant == "launchd" and sys.platform != "darwin" and not args.dry_run:
        raise InstallError("--launchd installs on macOS only (--dry-run prints it anywhere)")
    inst = build_install(args, variant)
    plan = install_service.plan_install(inst, variant, os.getuid())
    return _carry_out(plan, args.dry_run, installing=True)


def cmd_uninstall(args: argparse.Namespace) -> int:
    variant = _variant(args)
    plan = install_service.plan_uninstall(str(Path.home()), variant, os.getuid())
    return _carry_out(plan, args.dry_run, installing=False)


def _carry_out(plan: install_service.Plan, dry_run: bool, installing: bool) -> int:
    if dry_run:
        sys.stdout.write(install_service.describe(plan, installing))
        return 0
    try:
        problems = install_service.execute(plan)
    except PermissionError as exc:
        hint = " (sudo for --system)" if plan.variant == "system" else ""
        raise InstallError(f"{exc.filename}: permission denied{hint}") from exc
    for f in plan.write:
        print(f"wrote {f.path}")
    for path in plan.remove:
        print(f"removed {path}")
    for problem in problems:
        print(f"mapillaryd: {problem}", file=sys.stderr)
    for note in plan.notes:
        print(note)
    return 1 if problems else 0


# --- doctor, auth, logs --------------------------------------------------------------------------


def cmd_doctor(cfg: Config, *, offline: bool = False) -> int:
    facts = doctor.gather(cfg, check_network=not offline)
    findings = doctor.diagnose(facts)
    print(doctor.render(findings))
    return 1 if any(f.level == "fail" for f in findings) else 0


def cmd_auth(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    target = args.token_file or cfg.mapillary.token_file
    configured = target is not None
    if target is None:
        target = default_config_path(os.environ).parent / "token"
    target = target.expanduser()
    if args.from_mapillary_tools is not None:
        path = auth.mapillary_tools_config_path(os.environ, Path.home())
        profile = auth.load_profile(path, args.from_mapillary_tools or None)
        token = profile.token
        print(f"using mapillary_tools profile {profile.name!r} from {path}")
    elif args.token:
        token = args.token
    elif sys.stdin.isatty():
        token = getpass.getpass("Mapillary user access token: ")
    else:
        token = sys.stdin.readline()
    token = token.strip()
    if not args.no_check:
        try:
            me = auth.check_token(cfg.mapillary.graph_endpoint, token)
            print(f"token valid: user {me['username']} ({me['id']})")
        except UploadError as exc:
            print(
                f"mapillaryd: could not check the token ({exc}); storing it unchecked",
                file=sys.stderr,
            )
    auth.store_token(target, token)
    print(f"stored in {target} (mode 0600)")
    if not configured and not os.environ.get("MAPILLARY_TOKEN"):
        print(f'add to [mapillary] in {cfg.source}:  token_file = "{target}"')
    if os.environ.get("MAPILLARY_TOKEN"):
        print("note: MAPILLARY_TOKEN is set and overrides the token file")
    return 0


def cmd_logs() -> int:
    if sys.platform == "darwin":
        print(f"launchd agent: {Path.home()}/Library/Logs/mapillaryd/mapillaryd.log")
        print(f"follow: tail -F {Path.home()}/Library/Logs/mapillaryd/mapillaryd.log")
        return 0
    print("system service: journalctl -u mapillaryd -f")
    print("user service:   journalctl --user -u mapillaryd -f")
    print("only problems:  journalctl -u mapillaryd -p warning")
    print("as JSON:        journalctl -u mapillaryd -o cat | jq .")
    print("foreground:     mapillaryd run   (readable lines on a terminal)")
    return 0
