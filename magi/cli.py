"""The ``magi`` command line.

    magi profiles list                 profiles of the Hydra ``profile`` group
    magi profiles show NAME            one profile's tiers, models and settings
    magi validate NAME_OR_PATH...      exit 0 when valid, 2 (with every problem) when not
    magi discover [FOLDER...]          add folders, scan for GGUF models, print them, write the registry
    magi models list [--endpoints SET] the registered models, and remote endpoints with their health
    magi models check [PROFILE...]     do the profiles' models exist and match their tiers?
    magi models demo                   put the two demo models in place (needs the demo extra)
    magi route [--profile P] PROMPT... score and route prompts; no model is loaded
    magi ask [--profile P] PROMPT...   answer prompts (streamed), then the routing table
    magi ask/route --messages FILE.json
                                       the same for a conversation (a JSON list of messages)
    magi chat [--profile P] [--system TEXT]
                                       an interactive chat (history, /reset, /trace, /profile ...)
    magi serve [--profile P] [--port N] serve the profile over the OpenAI API (docs/SERVING.md)
    magi calibrate PROFILE --share powerful=0.3
                                       fit tier thresholds to target shares; save PROFILE-calibrated
    magi calibrate PROFILE --quality 95% --from RUN_DIR
                                       the cheapest thresholds keeping 95% of the strongest tier's quality
    magi evaluate PROFILE [--prompts FILE] [--limit N]
                                       answer every prompt on every tier once; sweep thresholds offline
    magi --version                     the installed version

``discover`` and ``models`` read the ``models:`` section of ``conf/config.yaml``
(folders, registry path, tier thresholds, pins, demo); options override it.

User mistakes print a clear message and exit 2; there is no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magi.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, MAGIException
from magi.prompt import escaped_byte

if TYPE_CHECKING:
    from magi.config.app import MagiConfig
    from magi.conversation import Conversation
    from magi.profiles import ProfileManager
    from magi.routing.router import RouteDecision, Stage

EXIT_OK = 0

Handler = Callable[[argparse.Namespace], int]


def _manager(args: argparse.Namespace):  # -> ProfileManager
    from magi.profiles import ProfileManager

    return ProfileManager(args.profiles_dir)


def cmd_profiles_list(args: argparse.Namespace) -> int:
    from magi.render import table

    manager = _manager(args)
    if not manager.profiles_dir.is_dir():
        raise MAGIException(
            f"Profile folder {manager.profiles_dir} does not exist. Check --profiles-dir or MAGI_CONF_DIR "
            "(a config folder holds config.yaml and profile/).",
            status_code=404,
        )
    from magi.errors import ConfigError
    from magi.profiles import read_profile_file

    rows = []
    for path in manager.profile_files():  # by file, so one bad file marks only its own row
        name = path.stem
        try:
            p = read_profile_file(path)
        except MAGIException as exc:
            problems = exc.problems if isinstance(exc, ConfigError) else [str(exc)]
            more = f" (+{len(problems) - 1} more; magi validate {name})" if len(problems) > 1 else ""
            rows.append((name, "INVALID", "", "", "", problems[0].splitlines()[0] + more))
            continue
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
        print(profile_summary(profile, key=manager.path_for(args.name).stem, registry_tiers=_saved_tiers()))
    return EXIT_OK


def _saved_tiers() -> dict[str, str]:
    """Model id -> tier from the saved registry (models.registry) and the endpoints, if any.

    Only read, never refreshed: showing a profile must not scan folders or assemble the
    demo model. A config or registry that does not load leaves the id suffixes to go by.
    """
    from magi.config import compose
    from magi.models.registry import ModelRegistry

    try:
        config = compose()
    except MAGIException:
        return {}
    tiers = {model_id: endpoint.tier for model_id, endpoint in config.endpoints.items()}
    try:
        registry = ModelRegistry.load(config.models.registry)
    except MAGIException:
        return tiers
    return {**{e.id: e.tier for e in registry.models.values()}, **tiers}


def _exists(path: Path) -> bool:
    """``path.exists()``, but False for a name the OS refuses (e.g. too long)."""
    try:
        return path.exists()
    except OSError:
        return False


def cmd_validate(args: argparse.Namespace) -> int:
    from magi.profiles import read_profile_file

    manager = _manager(args)
    failed = 0
    for target in args.targets:
        path = Path(target)
        try:
            if path.suffix in (".yaml", ".yml") and ("/" in target or _exists(path)):
                profile = read_profile_file(path)
                where = str(path)
            else:
                profile = manager.load_profile(target)
                where = str(manager.path_for(target))
        except MAGIException as exc:
            failed += 1
            print(f"error: {exc}", file=sys.stderr)
            continue
        print(
            f"OK      {where}: profile {profile.name!r}, tiers {', '.join(profile.tier_names)}, "
            f"{len(profile.enabled_models)} model(s)"
        )
    return EXIT_USER_ERROR if failed else EXIT_OK


def _app_config(args: argparse.Namespace):  # -> MagiConfig
    """The composed app config, with the endpoint set chosen by ``--endpoints``."""
    from magi.config import compose

    return compose(endpoints=getattr(args, "endpoints", None))


def _models_config(args: argparse.Namespace, config=None):  # -> tuple[ModelsConfig, int]
    """The app config's ``models`` section (and runtime n_ctx), with command-line overrides."""
    config = config if config is not None else _app_config(args)
    models = config.models
    update: dict[str, object] = {}
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
        config=models,
        n_ctx=n_ctx,
        include_demo=args.demo,
        progress=sys.stderr.isatty() and not args.json,
        add_dirs=[Path(f) for f in args.folders],
        forget_dirs=args.forget,
    )
    quiet = logging.getLogger("magi.models.discovery")
    level = quiet.level
    if not args.verbose:  # skipped files are listed below; no need to log them too
        quiet.setLevel(logging.ERROR)
    try:
        result = service.refresh(full=args.full)
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
                    "added_dirs": [str(p) for p in result.added_dirs],
                    "folders_file": str(service.folders_path),
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
    written = "written to" if result.saved else "unchanged at"
    print(
        f"\nRegistry {written} {service.registry_path} ({stats.models} model(s); {stats.read} read, "
        f"{stats.reused} unchanged; {stats.seconds:.2f}s; memory estimates for n_ctx={n_ctx})"
    )
    _print_folder_changes(result, models, service.folders_path)
    return EXIT_OK


def _print_folder_changes(result, models, folders_path: Path) -> None:  # DiscoveryResult, ModelsConfig
    """Say where an added folder is recorded, how to drop it, and the config line that does the same."""
    for folder in result.added:
        dirs = ",".join(str(d) for d in [*models.dirs, folder])
        print(
            f"\nAdded {folder}: recorded in {folders_path}, so every start with this registry "
            f"scans it beside models.dirs; `magi discover --forget {folder}` drops it.\n"
            f"To put it in the config instead: python run.py 'models.dirs=[{dirs}]', or in "
            f"conf/config.yaml, models: dirs: [{dirs.replace(',', ', ')}]"
        )
    for folder in result.forgotten:
        print(f"\nForgot {folder}: starts no longer scan it.")


def probe_endpoints(config, timeout: float | None = None) -> dict[str, str | None]:  # config: MagiConfig
    """Probe every endpoint of ``config`` at once; model id -> None (healthy) or the error.

    Each probe asks the server's own health endpoint (``health_paths``) and is bounded
    by the endpoint's ``probe_timeout`` (or ``timeout``).
    """
    from concurrent.futures import ThreadPoolExecutor

    from magi.runtime.remote import RemoteBackend
    from magi.runtime.resolve import remote_spec

    def probe(item) -> str | None:  # item: (model_id, EndpointConfig)
        model_id, endpoint = item
        if timeout is not None:
            endpoint = endpoint.model_copy(update={"probe_timeout": timeout, "connect_timeout": timeout})
        backend = RemoteBackend(remote_spec(model_id, endpoint, config.runtime))
        try:
            backend.probe()
        except MAGIException as exc:
            return str(exc)
        finally:
            backend.close()
        return None

    items = list(config.endpoints.items())
    if not items:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(items))) as pool:
        return dict(zip([m for m, _ in items], pool.map(probe, items), strict=True))


def _short_health(model_id: str, url: str, error: str | None, limit: int = 48) -> str:
    """``ok``, or the gist of the error (its first clause); the full text is printed below."""
    if error is None:
        return "ok"
    text = " ".join(error.removeprefix(f"Model '{model_id}' at {url}").lstrip(": ").split())
    gist = re.split(r" \(|\. |; ", text, maxsplit=1)[0].rstrip(".")
    return "error: " + (gist if len(gist) <= limit else gist[: limit - 1] + "\u2026")


def cmd_models_list(args: argparse.Namespace) -> int:
    from magi.config.endpoints import redact_url
    from magi.errors import ModelError
    from magi.models.registry import ModelRegistry
    from magi.render import table

    config = _app_config(args)
    models, _ = _models_config(args, config)
    endpoints = config.endpoints
    try:
        registry = ModelRegistry.load(models.registry)
    except ModelError as exc:
        if exc.status_code != 404 or not endpoints:
            raise
        registry, missing_registry = ModelRegistry(), str(exc)
    else:
        missing_registry = None
    health = {} if args.no_probe else probe_endpoints(config)
    from magi.runtime.resolve import model_spec

    # where each model runs with the runtime settings (CPU, GPU n/N layers)
    runs_on = {e.id: model_spec(e, config.runtime).placement for e in registry.models.values()}
    if args.json:
        local = [{**e.model_dump(mode="json"), "runs_on": runs_on[e.id]} for e in registry.models.values()]
        remote = [
            {
                "id": model_id,
                "remote": True,
                **endpoint.model_dump(mode="json"),
                "url": redact_url(endpoint.url),
                "healthy": None if args.no_probe else health[model_id] is None,
                "health": "not probed" if args.no_probe else health[model_id] or "ok",
            }
            for model_id, endpoint in endpoints.items()
        ]
        print(json.dumps(local + remote, indent=2))
        return EXIT_OK
    if missing_registry:
        print(f"No local models: {missing_registry}")
    elif not registry.models:
        print(f"No models in {models.registry}; run `magi discover FOLDER`.")
    else:
        rows = [
            row + (runs_on[entry.id], str(entry.path))
            for row, entry in zip(_model_rows(registry), registry.models.values(), strict=True)
        ]
        print(table(MODEL_HEADERS + ("runs on", "path"), rows))
        print(f"\n{len(registry.models)} model(s) in {models.registry} (updated {registry.updated_at})")
    if endpoints:
        rows = [
            (
                model_id,
                endpoint.tier,
                endpoint.api,
                redact_url(endpoint.url),
                endpoint.served_model(model_id),
                "not probed"
                if args.no_probe
                else _short_health(model_id, redact_url(endpoint.url), health[model_id]),
            )
            for model_id, endpoint in endpoints.items()
        ]
        print(f"\nRemote endpoints ({len(rows)}):")
        print(table(("id", "tier", "api", "url", "served model", "health"), rows))
        for model_id, endpoint in endpoints.items():
            if model_id in registry.models:
                verb = "replaces" if endpoint.override_local else "COLLIDES with"
                fix = "" if endpoint.override_local else " (rename it, or set override_local: true)"
                print(f"note: endpoint {model_id} {verb} the local model of the same id{fix}")
        failed = [m for m, error in health.items() if error]
        for model_id in failed:
            print(f"\n{model_id}: {health[model_id]}")
    elif getattr(args, "endpoints", None):
        print(f"\nEndpoint set '{args.endpoints}' declares no remote models.")
    return EXIT_OK


def cmd_models_check(args: argparse.Namespace) -> int:
    from magi.models.registry import ModelRegistry
    from magi.models.tiers import check_tier_matching, profile_tier_models

    config = _app_config(args)
    models, _ = _models_config(args, config)
    registry = ModelRegistry.load(models.registry)
    endpoints = config.endpoints
    manager = _manager(args)
    failed = 0
    for name in args.profiles or manager.list_profiles():
        try:
            profile = manager.load_profile(name)
        except MAGIException as exc:
            failed += 1
            print(f"INVALID {name}\n{exc}", file=sys.stderr)
            continue
        problems = check_tier_matching(profile, registry, endpoints=endpoints)
        if problems:
            failed += 1
            print(f"INVALID {name}: profile {profile.name!r} against {models.registry}", file=sys.stderr)
            for problem in problems:
                print(f"  - {problem}", file=sys.stderr)
            continue
        tiers = profile_tier_models(profile, registry, strict=False, endpoints=endpoints)
        print(f"OK      {name}: " + "; ".join(f"{t}: {', '.join(ids)}" for t, ids in tiers.items()))
    return EXIT_USER_ERROR if failed else EXIT_OK


def cmd_models_demo(args: argparse.Namespace) -> int:
    from magi.models.demo import DEMO_MODELS
    from magi.models.discovery import demo_folder

    models, _ = _models_config(args)
    folder = args.dir or demo_folder(models)
    for model in DEMO_MODELS:  # what the demo profile runs: every demo model
        print(model.ensure(folder, progress=sys.stderr.isatty()))
    print("Register them with: magi discover" + (f" {folder}" if args.dir else ""), file=sys.stderr)
    return EXIT_OK


def _json_number(value: float | None) -> float | str | None:
    """Infinity as the string "Infinity" (as MAGI's JSON does), so the output is strict JSON."""
    if value is not None and math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _stage_budget(config: MagiConfig, stage: Stage) -> int | None:
    """A stage's token budget on the runtime defaults (None: unlimited); each model's own
    is :func:`magi.runtime.resolve.stage_budgets`."""
    from magi.runtime.backend import stage_settings

    return stage_settings(config.runtime.sampling, stage.max_tokens).max_tokens


def _budget_text(default: int | None, own: Mapping[str, int | None]) -> str:
    """``" (<= 256 tokens)"``, or per model when a model's own settings differ:
    ``" (<= 64 tokens on a; unlimited on b)"``."""
    if all(value == default for value in own.values()):
        return "" if default is None else f" (<= {default} tokens)"
    groups: dict[int | None, list[str]] = {}
    for model_id, value in own.items():
        groups.setdefault(value, []).append(model_id)
    parts = [
        f"{'unlimited' if value is None else f'<= {value} tokens'} on {', '.join(ids)}"
        for value, ids in groups.items()
    ]
    return f" ({'; '.join(parts)})"


def route_plan(
    config: MagiConfig, decision: RouteDecision, top: int = 3, members: Mapping[str, list[str]] | None = None
) -> dict[str, Any]:
    """What ``magi route --json`` reports for one prompt, as plain JSON-safe data; with the
    tiers' ``members`` (registry), each stage's budget on each model too."""
    from magi.runtime.resolve import stage_budgets

    score = decision.score

    def per_model(stage: Stage) -> dict[str, Any]:
        own = stage_budgets(config, stage.tier, stage.max_tokens, members or {})
        return {"models": own} if own else {}

    return {
        "profile": config.profile.name,
        "scorer": score.scorer or config.scorer,
        "score": score.score,
        "tier": decision.tier,
        "max_score": _json_number(config.profile.tier(decision.tier).max_score),
        "two_stage": decision.two_stage,
        "stages": [
            {
                "role": stage.role,
                "tier": stage.tier,
                "max_tokens": _stage_budget(config, stage),
                **per_model(stage),
            }
            for stage in decision.stages
        ],
        "top_contributions": [
            {"name": name, "points": points, "evidence": evidence}
            for name, points, evidence in score.ranked()[:top]
        ],
        "contributions": dict(score.contributions),
        "features": dict(score.features),
        "explanation": score.explain(),
        "scored": decision.scored,
    }


def route_text(
    config: MagiConfig, decision: RouteDecision, top: int = 3, members: Mapping[str, list[str]] | None = None
) -> str:
    """What ``magi route`` prints for one prompt: score and tier, top reasons, stage plan
    (each stage's budget, per model where a model's own settings change it)."""
    from magi.render import fmt_score
    from magi.runtime.resolve import stage_budgets

    def on(stage: Stage) -> str:
        own = stage_budgets(config, stage.tier, stage.max_tokens, members or {})
        return stage.tier + _budget_text(_stage_budget(config, stage), own)

    if decision.two_stage:
        draft, refine = decision.stages
        steps = f"two stages: draft on {on(draft)} -> refine on {refine.tier}"
    else:
        steps = f"one stage: answer on {on(decision.stages[0])}"
    reasons = ", ".join(
        f"{name.replace('_', ' ')} {points:+.2f}" + (f" ({evidence})" if evidence else "")
        for name, points, evidence in decision.score.ranked()[:top]
    )
    max_score = fmt_score(config.profile.tier(decision.tier).max_score)
    return "\n".join(
        [
            f"  score  {decision.score.score:.2f} / 10 -> tier {decision.tier} (max_score {max_score})",
            f"  why    {reasons or 'no complexity cues'}",
            f"  plan   {steps}",
            *([f"  scored {decision.scored}"] if decision.turns > 1 else []),
        ]
    )


def _conversations(args: argparse.Namespace) -> list[Conversation]:
    """The ``--messages`` files, read and checked (:func:`magi.conversation.load_messages`:
    an error names the file and the message's index); at least one prompt or file."""
    from magi.conversation import load_messages

    if not args.prompts and not args.messages:
        raise MAGIException(
            f"magi {args.command}: give at least one PROMPT or --messages FILE.json.", status_code=400
        )
    return [load_messages(path) for path in args.messages]


def cmd_ask(args: argparse.Namespace) -> int:
    """Answer prompts with a profile, like ``python run.py prompt=...`` but without Hydra's
    override grammar, so a prompt may hold commas, quotes and parentheses as typed."""
    from magi.config import compose
    from magi.runtime.runner import Runner
    from magi.tasks.run import answer_prompts, exit_status, routing_table

    requests = [*args.prompts, *_conversations(args)]  # every file checked before a model loads
    config = compose(args.profile, args.override)
    with Runner(config) as runner:
        answers = answer_prompts(runner, requests)  # a failed prompt does not stop the rest
    print()
    print(routing_table(answers), flush=True)
    return exit_status(answers)  # 1 if some failed; raises (exit 2) if none was answered


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve a profile over the OpenAI API (magi.serve) until SIGTERM or Ctrl-C."""
    from magi.config import compose
    from magi.serve import serve

    options = ["task=serve", *args.override]
    for key in ("host", "port", "api_keys_file"):
        value = getattr(args, key)
        if value is not None:
            options.append(f"task.{key}={json.dumps(str(value)) if key != 'port' else value}")
    config = compose(args.profile, options)
    return serve(config, profile_key=args.profile, overrides=args.override)


def cmd_chat(args: argparse.Namespace) -> int:
    """An interactive chat on a profile (:mod:`magi.chat`): reads stdin until Ctrl-D or /quit."""
    from magi.chat import ChatSession, chat_loop

    with ChatSession.open(args.profile, args.override, system=args.system) as session:
        return chat_loop(session)


def cmd_route(args: argparse.Namespace) -> int:
    """Score and route prompts with a profile's tiers; loads no model and reads no model file."""
    from magi.config import compose
    from magi.render import fmt_score
    from magi.routing import HealthMonitor, Router
    from magi.routing.scorer import config_scorer
    from magi.runtime.resolve import registered_tier_members

    conversations = list(zip(args.messages, _conversations(args), strict=True))
    config = compose(args.profile, args.override)
    # No tier members: which models would answer depends on the registry; the tier
    # and the stage plan depend only on the profile and the scorer.
    router = Router(config.profile, {}, config_scorer(config), HealthMonitor(), seed=config.runtime.seed)
    decisions = [(repr(prompt), {"prompt": prompt}, router.decide(prompt)) for prompt in args.prompts]
    for path, conv in conversations:
        what = {"messages_file": str(path), "messages": len(conv.messages), "prompt": conv.last_user}
        count = len(conv.messages)
        title = f"{path} ({count} message{'' if count == 1 else 's'}): {conv.last_user!r}"
        decisions.append((title, what, router.decide(conv)))
    # the models of each tier as the registry has them (read, not refreshed): their own
    # settings (runtime.models.<id>) may change a stage's budget
    members = registered_tier_members(config)
    if args.json:
        plans = [{**what, **route_plan(config, d, args.top, members)} for _, what, d in decisions]
        print(json.dumps(plans, indent=2, allow_nan=False))
        return EXIT_OK
    profile = config.profile
    tiers = ", ".join(f"{t.name} <= {fmt_score(t.max_score)}" for t in profile.tier_config)
    ts = profile.two_stage
    two_stage = f"on ({ts.stage1_tier} drafts, {ts.stage2_tier} refines)" if ts.enabled else "off"
    print(f"Profile {profile.name!r}: scorer {config.scorer}; tiers {tiers}; two-stage {two_stage}")
    for title, _, decision in decisions:
        print(f"\n{title}")
        print(route_text(config, decision, args.top, members))
    return EXIT_OK


def cmd_scorer_eval(args: argparse.Namespace) -> int:
    """AUC, APGR and CPT of scorers on a file of routing outcomes or a task=tiers run
    folder (magi.routing.outcomes)."""
    from magi.routing.learned import DEFAULT_MODEL
    from magi.routing.outcomes import (
        OutcomeFileError,
        evaluate_scorers,
        format_report,
        load_outcomes,
        report_groups,
        run_arms,
        unscored_groups,
    )
    from magi.routing.scorer import available_scorers, get_scorer

    outcomes = load_outcomes(args.file)
    unscored = unscored_groups(outcomes)
    why = [f"{group}: {reason}" for group, reason in unscored.items()]
    if len(unscored) == len(report_groups(outcomes)):
        raise OutcomeFileError(f"{args.file}: nothing to score ({len(outcomes)} prompts): " + "; ".join(why))
    scorers = {}
    for name in args.scorer or available_scorers():
        if name != "learned":
            scorers[name] = get_scorer(name)
        elif args.scorer or args.model is not None or DEFAULT_MODEL.exists():
            scorers[name] = get_scorer(name, path=args.model)
    report = evaluate_scorers(outcomes, scorers)
    notes = [f"{group}: not scored: {reason}" for group, reason in unscored.items()]
    if args.json:
        print(json.dumps({n: {g: f.to_dict() for g, f in r.items()} for n, r in report.items()}, indent=2))
        for note in notes:
            print(note, file=sys.stderr)
    else:
        arms = ""
        if Path(args.file).is_dir():
            arms = " (weak arm {!r}, strong arm {!r})".format(*run_arms(args.file))
        print(f"{args.file}: {len(outcomes)} prompts with outcomes{arms}")
        if "learned" in scorers:
            print(f"learned scorer's model: {scorers['learned'].path}")
        print(format_report(report))
        for note in notes:
            print(note)
    return EXIT_OK


def cmd_scorer_train(args: argparse.Namespace) -> int:
    """Train the learned scorer on routing outcomes and write its model file."""
    from magi.routing.learned import (
        FEW_POSITIVES,
        TrainingDataError,
        check_trainable,
        cross_validate,
        file_digest,
        save_model,
        train,
    )
    from magi.routing.outcomes import load_outcomes, outcome_source

    if args.cv < 0 or args.cv == 1:
        raise MAGIException(f"--cv: cross-validation needs at least 2 folds (or 0 for none), got {args.cv}")
    _check_model_output(Path(args.file), Path(args.output))
    outcomes = load_outcomes(args.file)
    try:  # refused, not warned about: a model of one class would look trained and route blindly
        check_trainable(outcomes)
    except TrainingDataError as exc:
        raise TrainingDataError(f"{args.file}: {exc}; no model written") from None
    questions = len({o.prompt for o in outcomes})
    if args.cv > questions:  # folds are by question: the extra ones would be empty
        raise MAGIException(
            f"--cv {args.cv}: more folds than the {questions} questions of {args.file}; "
            f"give at most --cv {questions} (or 0 for none); no model written"
        )
    if args.cv:
        import statistics

        for group, folds in cross_validate(outcomes, folds=args.cv).items():
            apgrs = [f.apgr for f in folds]
            scored = (
                ""
                if len(folds) == args.cv
                else f"{len(folds)} of {args.cv} folds scored (the others' training or test part had no "
                "prompt where the weak tier fails and the strong one succeeds, or only such prompts), "
            )
            print(
                f"{args.cv}-fold cross-validation, {group}: {scored}APGR {statistics.mean(apgrs):.3f} "
                f"(folds {', '.join(f'{a:.3f}' for a in apgrs)}), "
                f"CPT50 {statistics.mean(f.cpt50 for f in folds):.1%}, "
                f"CPT80 {statistics.mean(f.cpt80 for f in folds):.1%}, "
                f"AUC {statistics.mean(f.auc for f in folds):.3f}"
            )
    source = outcome_source(args.file)  # a run folder's tiers.jsonl: named "<run>/tiers.jsonl"
    name = source.name if source == Path(args.file) else f"{Path(args.file).resolve().name}/{source.name}"
    model = train(outcomes, trained_on={"file": name, "sha256": file_digest(source)})
    path = save_model(model, args.output)
    print(
        f"wrote {path}: trained on {model.trained_on['prompts']} prompts "
        f"({model.trained_on['positives']} where the weak tier fails and the strong one succeeds), "
        f"{len(model.ngrams)} words; use it with scorer=learned +scorer_options.path={path}"
    )
    positives = model.trained_on["positives"]
    if positives < FEW_POSITIVES:
        print(
            f"warning: only {positives} prompt{'s' if positives != 1 else ''} where the weak tier fails and "
            f"the strong one succeeds: the model learns {'them' if positives != 1 else 'it'}, not what makes "
            f"a prompt need the strong tier (a few hundred graded prompts where the tiers differ are needed)",
            file=sys.stderr,
        )
    return EXIT_OK


def _check_model_output(source: Path, output: Path) -> None:
    """Refuse an ``-o`` that would overwrite what ``magi scorer train`` reads: the outcome
    file itself, or (for a run folder) one of the run's files. Resolved paths are compared."""
    target = output.resolve()
    if source.is_dir():
        folder = source.resolve()
        if target.exists() and folder in target.parents:
            raise MAGIException(
                f"-o {output}: is a file of the run folder being trained on ({source}); "
                "write the model elsewhere, e.g. -o models/learned.json; no model written"
            )
    elif target == source.resolve():
        raise MAGIException(
            f"-o {output}: is the outcome file being trained on; "
            "write the model elsewhere, e.g. -o models/learned.json; no model written"
        )


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
    from magi.sweeps.calibration import DEFAULT_HOLDOUT_FRACTION, calibrate, load_sets

    if args.quality is not None or args.tiers_run is not None:
        return _calibrate_quality(args)
    manager = _manager(args)
    profile = manager.load_profile(args.profile)
    scorer = _calibration_scorer(args.scorer)
    fraction = args.holdout_fraction
    if fraction is None and args.holdout is None and not args.no_holdout:
        fraction = DEFAULT_HOLDOUT_FRACTION
    fit, held, fit_name, held_name = load_sets(
        args.prompts,
        None if args.no_holdout else args.holdout,
        fraction,
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
    return _save_and_show(args, manager, report)


def _calibration_scorer(name: str | None) -> Any:
    """The scorer ``magi calibrate`` fits thresholds for: the config's, built with its
    ``scorer_options`` (:func:`~magi.routing.scorer.config_scorer`), or ``--scorer NAME``
    with that scorer's defaults when it is another one."""
    from magi.config import compose
    from magi.routing.scorer import config_scorer, get_scorer

    config = compose()
    if name is None or name == config.scorer:
        return config_scorer(config)
    return get_scorer(name)


def _save_and_show(args: argparse.Namespace, manager: ProfileManager, report: Any) -> int:
    """What ``magi calibrate`` does with a report, for shares and quality alike: save it as
    ``<profile>-calibrated`` unless ``--dry-run``, then print it (text, or ``--json``)."""
    from magi.sweeps.calibration import save_calibrated

    if not args.dry_run:
        save_calibrated(
            report,
            profiles_dir=manager.profiles_dir,
            source_key=manager.path_for(args.profile).stem,
            overwrite=not args.no_overwrite,
        )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
        for warning in report.warnings:  # the text report has them; JSON readers see them here too
            print(f"warning: {warning}", file=sys.stderr)
    else:
        print(report.to_text())
        if args.dry_run:
            print("\n(dry run: nothing saved)")
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Answer a prompt set on every tier of a profile (magi.sweeps.tiers.evaluate)."""
    from magi.sweeps.tiers import evaluate

    evaluate(
        args.profile,
        args.override,
        prompts=args.prompts,
        limit=args.limit,
        cache_dir=args.cache_dir,
        output_dir=args.output_dir,
    )
    return EXIT_OK


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a whole number above 0 (got {text!r})")
    return value


def _calibrate_quality(args: argparse.Namespace) -> int:
    """``magi calibrate PROFILE --quality 95% --from RUN_DIR``."""
    from magi.errors import ConfigError
    from magi.sweeps.calibration import (
        DEFAULT_HOLDOUT_FRACTION,
        calibrate_quality,
        parse_quality,
        read_tiers_run,
    )

    problems = []
    quality = None
    if args.quality is None:
        problems.append("--from RUN_DIR is for a quality calibration: give --quality too, e.g. --quality 95%")
    else:
        try:
            quality = parse_quality(args.quality)
        except ConfigError as exc:
            problems += exc.problems
    if args.tiers_run is None:
        problems.append(
            "--quality needs --from RUN_DIR, the folder of a task=tiers run "
            "(magi evaluate PROFILE or python run.py task=tiers profile=PROFILE)"
        )
    if args.share:
        problems.append("--share and --quality are two kinds of calibration: give one")
    if args.holdout is not None or args.no_holdout:
        problems.append("--quality holds out part of the run's prompts: --holdout-fraction, not --holdout")
    if problems:
        raise ConfigError(problems, headline="Cannot calibrate")
    assert quality is not None
    records, summary = read_tiers_run(args.tiers_run)
    manager = _manager(args)
    profile = manager.load_profile(args.profile)
    report = calibrate_quality(
        profile,
        records,
        quality=quality,
        holdout_fraction=DEFAULT_HOLDOUT_FRACTION if args.holdout_fraction is None else args.holdout_fraction,
        seed=args.seed,
        name=args.name,
        run_dir=str(args.tiers_run),
        scorer=_calibration_scorer(args.scorer),
        run_scorer=summary.get("scorer"),
        run_summary=summary,
        profile_key=args.profile,
        fraction_setting="--holdout-fraction",
    )
    return _save_and_show(args, manager, report)


def _add_config_options(parser: argparse.ArgumentParser, example: str) -> None:
    """``--profile`` and repeatable ``-o KEY=VALUE``: what ``magi.compose`` takes."""
    parser.add_argument("--profile", default=None, help="profile to use (default: the config's default)")
    parser.add_argument(
        "-o",
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"Hydra override, repeatable, e.g. {example}",
    )


def _add_messages_option(parser: argparse.ArgumentParser, verb: str) -> None:
    parser.add_argument(
        "--messages",
        action="append",
        default=[],
        type=Path,
        metavar="FILE.json",
        help=f'a conversation to {verb}: a JSON list of {{"role", "content"}} messages (or '
        '{"messages": [...]}) ending with a user message; repeatable',
    )


def installed_version() -> str:
    """The installed distribution's version (what pip installed), else ``magi.__version__``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("magi")
    except PackageNotFoundError:  # run from a source tree that was never installed
        from magi import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="magi", description="Run several local GGUF models behind one Hydra configuration."
    )
    parser.add_argument("--version", action="version", version=f"magi {installed_version()}")
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
        description="Scan models.dirs, the folders added before and the FOLDERs given recursively "
        "for .gguf files, read their metadata without loading weights, print the models and write "
        "the registry. A FOLDER is recorded in the folders file beside the registry "
        "(models/registry.folders.json by default), so every start scans it too. "
        "Files unchanged since the last run (same size and mtime) are not read again.",
    )
    discover.add_argument(
        "folders",
        nargs="*",
        metavar="FOLDER",
        help="folders to add: scanned now and at every start (recorded beside the registry, "
        "in REGISTRY_STEM.folders.json)",
    )
    discover.add_argument(
        "--forget",
        action="append",
        default=[],
        type=Path,
        metavar="FOLDER",
        help="stop scanning a folder an earlier `magi discover FOLDER` added (repeatable)",
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
    endpoints_help = "endpoint set of remote models (conf/endpoints/SET.yaml; default: the config's)"
    mlist = msub.add_parser(
        "list",
        help="list the registered models and remote endpoints (with their health)",
        description="List the registry's local models, then the remote endpoints of the chosen set, "
        "each probed on its server's health endpoint (ok, or the error).",
    )
    mlist.add_argument("--registry", type=Path, default=None, help="registry JSON (default: models.registry)")
    mlist.add_argument("--endpoints", metavar="SET", default=None, help=endpoints_help)
    mlist.add_argument("--no-probe", action="store_true", help="do not probe the remote endpoints")
    mlist.add_argument("--json", action="store_true", help="print the entries as JSON")
    mlist.set_defaults(handler=cmd_models_list)
    mcheck = msub.add_parser("check", help="check profiles against the registry (models exist, tiers match)")
    mcheck.add_argument("profiles", nargs="*", metavar="PROFILE", help="profiles (default: all)")
    mcheck.add_argument(
        "--registry", type=Path, default=None, help="registry JSON (default: models.registry)"
    )
    mcheck.add_argument("--endpoints", metavar="SET", default=None, help=endpoints_help)
    mcheck.set_defaults(handler=cmd_models_check)
    mdemo = msub.add_parser(
        "demo", help="put the bundled demo models in place (SmolLM2-135M-Instruct, Gemma 3 270M)"
    )
    mdemo.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="target folder (default: models.demo_dir, else models/)",
    )
    mdemo.set_defaults(handler=cmd_models_demo)

    ask = sub.add_parser(
        "ask",
        help="answer prompts with a profile and show how each was routed",
        description="Answer each prompt with the profile's models (streamed, stages marked), then "
        "print the routing table. Prompts are taken as typed: commas, quotes and parentheses need "
        "no Hydra quoting. A prompt that is not valid UTF-8 is refused (exit 2), naming the byte.",
    )
    ask.add_argument("prompts", nargs="*", metavar="PROMPT", help="prompts to answer")
    _add_messages_option(ask, "answer")
    _add_config_options(ask, "-o runtime.max_tokens=64")
    ask.set_defaults(handler=cmd_ask)

    chat = sub.add_parser(
        "chat",
        help="chat with a profile in the terminal (history, /reset, /system, /trace, /profile)",
        description="An interactive chat: each line is a message, answered with the conversation "
        "so far (streamed, stages marked). /help lists the commands (/reset, /system TEXT, /trace, "
        "/profile NAME, /quit). Ctrl-C stops an answer (its text so far is kept) or clears the "
        "line; Ctrl-D quits. Piped input works too: one line per message, no prompt; exit 1 if a "
        "message failed.",
    )
    chat.add_argument("--system", default=None, metavar="TEXT", help="the system prompt (/system changes it)")
    _add_config_options(chat, "-o runtime.max_tokens=256")
    chat.set_defaults(handler=cmd_chat)

    route = sub.add_parser(
        "route",
        help="score prompts and show the tier and stage plan (no model is loaded)",
        description="Score each prompt with the profile's scorer and show the tier it routes to, the "
        "largest feature contributions, and whether it is drafted and refined (two-stage). Uses only "
        "the configuration: no model file is read and nothing is loaded.",
    )
    route.add_argument("prompts", nargs="*", metavar="PROMPT", help="prompts to route")
    _add_messages_option(route, "route")
    _add_config_options(route, "-o profile.two_stage.enabled=false -o scorer=heuristic")
    route.add_argument("--top", type=int, default=3, help="feature contributions to show (default 3)")
    route.add_argument("--json", action="store_true", help="print the routing plans as JSON")
    route.set_defaults(handler=cmd_route)
    serve = sub.add_parser(
        "serve",
        help="serve a profile over the OpenAI API (chat, completions, health, metrics)",
        description="Answer /v1/chat/completions and /v1/completions (streamed or not) with the "
        "profile's models, with /v1/models, /health, /health/models and /metrics (docs/SERVING.md). "
        "Binds 127.0.0.1 unless --host says otherwise; API keys from MAGI_API_KEYS or --api-keys-file.",
    )
    _add_config_options(serve, "-o runtime.n_threads=4")
    serve.add_argument("--host", default=None, help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=None, help="TCP port (default 8080)")
    serve.add_argument(
        "--api-keys-file", type=Path, default=None, help="file of API keys, one per line (or MAGI_API_KEYS)"
    )
    serve.set_defaults(handler=cmd_serve)
    scorer = sub.add_parser(
        "scorer", help="judge complexity scorers on routing outcomes; train the learned one"
    )
    ssub = scorer.add_subparsers(dest="action", required=True, metavar="ACTION")
    seval = ssub.add_parser(
        "eval",
        help="AUC, APGR and CPT(50%%/80%%) of each scorer on prompts with outcomes (file or tiers run)",
        description='FILE is JSON lines {"prompt", "weak": bool, "strong": bool, "bench"?} '
        "(RouteLLM's outcome format): whether the weak and the strong model answered correctly; "
        "or the folder of a task=tiers run (magi evaluate), whose weakest tier and strongest arm "
        "(the two-stage path when it refines on the strongest tier) are the weak and the strong "
        "model, a grade of at least 0.5 correct. "
        "Reports each scorer per bench (gsm8k, mmlu/... as mmlu) and on all prompts; a bench with "
        "no weak/strong gap (no prompt where the weak model fails and the strong one succeeds) is "
        "named and left out, and exit 2 when no bench has one.",
    )
    seval.add_argument("file", metavar="FILE", help="outcome file (.jsonl) or task=tiers run folder")
    seval.add_argument(
        "--scorer", action="append", help="registered scorer to judge (repeat; default: every one)"
    )
    seval.add_argument(
        "--model", default=None, help="the learned scorer's model file (default: the shipped one)"
    )
    seval.add_argument("--json", action="store_true", help="print the figures as JSON")
    seval.set_defaults(handler=cmd_scorer_eval)
    strain = ssub.add_parser(
        "train",
        help="train the learned scorer on outcomes (file or tiers run) and write its model (JSON)",
        description="Fits a logistic regression predicting where the weak tier fails and the strong "
        "one succeeds (magi.routing.learned); deterministic. FILE_OR_RUN is an outcome file or "
        "a task=tiers run folder, as for `magi scorer eval`. --cv K first reports K-fold "
        "cross-validated APGR/CPT per bench (folds by question). Outcomes with no prompt where the "
        "weak tier fails and the strong one succeeds (or only such prompts) are refused (exit 2, "
        "nothing written); fewer than 10 such prompts is a warning.",
    )
    strain.add_argument("file", metavar="FILE_OR_RUN", help="outcome file (.jsonl) or task=tiers run folder")
    strain.add_argument("-o", "--output", required=True, help="model file to write (.json)")
    strain.add_argument("--cv", type=int, default=0, metavar="K", help="report K-fold cross-validation first")
    strain.set_defaults(handler=cmd_scorer_train)
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
    hold.add_argument("--holdout", default=None, help=f"held-out prompt set, e.g. {DEFAULT_HOLDOUT_PROMPTS}")
    hold.add_argument(
        "--holdout-fraction",
        type=float,
        default=None,
        help="hold out this fraction of --prompts, stratified by label (default 0.3 without --holdout)",
    )
    hold.add_argument("--no-holdout", action="store_true", help="report on the calibration set only")
    cal.add_argument("--seed", type=int, default=0, help="seed of the --holdout-fraction split")
    cal.add_argument(
        "--quality",
        default=None,
        metavar="FRACTION",
        help="calibrate for quality instead: the cheapest thresholds keeping this share of the strongest "
        "tier's quality, e.g. 95%% or 0.95 (needs --from)",
    )
    cal.add_argument(
        "--from",
        dest="tiers_run",
        default=None,
        metavar="RUN_DIR",
        help="with --quality: a task=tiers run folder (magi evaluate PROFILE) whose graded answers are read",
    )
    cal.add_argument("--name", default=None, help="name of the new profile (default '<name> calibrated')")
    cal.add_argument(
        "--scorer",
        default=None,
        help="registered scorer (default: the config's scorer, with its scorer_options)",
    )
    cal.add_argument("--dry-run", action="store_true", help="report only; save nothing")
    cal.add_argument("--no-overwrite", action="store_true", help="fail if the new profile's file exists")
    cal.add_argument("--json", action="store_true", help="print the report as JSON")
    cal.set_defaults(handler=cmd_calibrate)
    evaluate = sub.add_parser(
        "evaluate",
        help="answer every prompt on every tier of a profile once; sweep thresholds offline",
        description="Answers each prompt on each tier alone (and through the two-stage path when "
        "the profile uses it), grades the answers with the prompt set's graders, stores them "
        "(tiers.jsonl; cached, so a rerun with the same models and settings asks no model) and "
        "reports quality, share per tier and cost for the profile's thresholds, the quality "
        "curve, APGR and CPT(50%/80%) (tiers_summary.json/.md). Same as python run.py task=tiers.",
    )
    evaluate.add_argument("profile", help="profile to evaluate, e.g. development")
    evaluate.add_argument("--prompts", default=None, help="prompt set (.jsonl, .txt or humaneval)")
    evaluate.add_argument("--limit", type=_positive_int, default=None, help="only the first N prompts")
    evaluate.add_argument(
        "--cache-dir", default=None, help="answer cache folder (default: beside the run folder: outputs/)"
    )
    evaluate.add_argument("--output-dir", default=None, help="run folder (default: outputs/<date>/<time>)")
    evaluate.add_argument(
        "-o",
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Hydra override, repeatable, e.g. -o runtime.max_tokens=64 -o 'task.thresholds=[2,5,8]'",
    )
    evaluate.set_defaults(handler=cmd_evaluate)
    return parser


def undecodable_argument(argv: Sequence[str]) -> str | None:
    """Why an argument cannot be used as text, or None when all can.

    Python decodes argv with ``surrogateescape``: a byte that is not valid in the
    locale's encoding (``$'caf\\xe9'`` in a UTF-8 terminal) becomes a lone surrogate,
    which no model can be given. MAGI refuses such an argument rather than guess its
    encoding (latin-1? cp1252?): the message names the argument, the byte and where it is.
    """
    encoding = sys.getfilesystemencoding().upper().replace("UTF8", "UTF-8")
    for n, arg in enumerate(argv, 1):
        for position, char in enumerate(arg):
            code, byte = ord(char), escaped_byte(char)
            if byte is not None:
                return (
                    f"argument {n} is not valid {encoding} (byte 0x{byte:02X} at position "
                    f"{position}); pass {encoding} text, e.g. convert it with `iconv -f latin1 -t utf-8`"
                )
            if 0xD800 <= code <= 0xDFFF:
                return f"argument {n} is not valid text (lone surrogate U+{code:04X} at position {position})"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 user error).

    Arguments that are not valid text in the locale's encoding (normally UTF-8) are
    refused with exit 2 before anything runs (:func:`undecodable_argument`).
    """
    parser = build_parser()
    problem = undecodable_argument(sys.argv[1:] if argv is None else argv)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USER_ERROR
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    handler: Handler = args.handler
    try:
        return handler(args)
    except MAGIException as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (magi ask ... | head)
        from magi.app import reader_gone

        return reader_gone()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
