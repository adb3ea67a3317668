"""The ``magi`` command line.

    magi profiles list                 profiles of the Hydra ``profile`` group
    magi profiles show NAME            one profile's tiers, models and settings
    magi validate NAME_OR_PATH...      exit 0 when valid, 2 (with every problem) when not

User mistakes print a clear message and exit 2; there is no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from magi.errors import MAGIException

EXIT_OK = 0
EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace], int]


def _manager(args: argparse.Namespace):  # -> ProfileManager
    from magi.profiles import ProfileManager

    return ProfileManager(args.profiles_dir)


def cmd_profiles_list(args: argparse.Namespace) -> int:
    from magi.render import table

    manager = _manager(args)
    rows = []
    for name in manager.list_profiles():
        try:
            p = manager.load_profile(name)
            rows.append(
                (
                    name,
                    p.name,
                    ", ".join(p.tier_names),
                    "on" if p.two_stage.enabled else "off",
                    p.load_balancing.strategy if p.load_balancing.enabled else "off",
                    p.description,
                )
            )
        except MAGIException as exc:
            rows.append((name, "INVALID", "", "", "", str(exc).splitlines()[0]))
    if args.json:
        print(json.dumps([r[0] for r in rows]))
        return EXIT_OK
    if not rows:
        print(f"No profiles in {manager.profiles_dir}")
        return EXIT_OK
    print(table(("profile", "name", "tiers", "two-stage", "balancing", "description"), rows))
    return EXIT_OK


def cmd_profiles_show(args: argparse.Namespace) -> int:
    from magi.render import profile_summary

    manager = _manager(args)
    profile = manager.load_profile(args.name)
    if args.json:
        print(profile.model_dump_json(indent=2))
    else:
        print(profile_summary(profile, key=manager.path_for(args.name).stem))
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    from magi.profiles import read_profile_file

    manager = _manager(args)
    failed = 0
    for target in args.targets:
        path = Path(target)
        try:
            if path.suffix in (".yaml", ".yml") and (path.exists() or "/" in target):
                profile = read_profile_file(path)
                where = str(path)
            else:
                profile = manager.load_profile(target)
                where = str(manager.path_for(target))
        except MAGIException as exc:
            failed += 1
            print(f"INVALID {target}\n{exc}", file=sys.stderr)
            continue
        print(
            f"OK      {where}: profile {profile.name!r}, tiers {', '.join(profile.tier_names)}, "
            f"{len(profile.enabled_models)} model(s)"
        )
    return EXIT_USAGE if failed else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="magi", description="Run several local GGUF models behind one Hydra configuration."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what MAGI does")
    parser.add_argument(
        "--profiles-dir",
        type=Path,
        default=None,
        help="profile folder (default: the Hydra group conf/profile, or $MAGI_CONF_DIR/profile)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    profiles = sub.add_parser("profiles", help="list or show profiles")
    psub = profiles.add_subparsers(dest="action", required=True, metavar="ACTION")
    plist = psub.add_parser("list", help="list the profiles")
    plist.add_argument("--json", action="store_true", help="print the names as JSON")
    plist.set_defaults(handler=cmd_profiles_list)
    pshow = psub.add_parser("show", help="show one profile")
    pshow.add_argument("name", help="profile name, e.g. production or 'Fast Only'")
    pshow.add_argument("--json", action="store_true", help="print the validated profile as JSON")
    pshow.set_defaults(handler=cmd_profiles_show)

    validate = sub.add_parser("validate", help="validate profiles by name or YAML path")
    validate.add_argument("targets", nargs="+", metavar="NAME_OR_PATH")
    validate.set_defaults(handler=cmd_validate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 user error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    handler: Handler = args.handler
    try:
        return handler(args)
    except MAGIException as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
