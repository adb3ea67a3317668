"""Hostile and broken config files, names and writes (issue 10, items 5, 7, 9, 10 and
the smaller ones): each is refused clearly by every path that reads it — ``magi
validate``, ``magi profiles list``, ``magi.compose`` (so ``magi route``/``ask``) and
``python run.py`` — with ``error: <file>: <problem>``, exit 2 and no traceback."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import magi
from magi import ProfileManager
from magi.cli import main
from magi.config.compose import check_config_files
from magi.config.profile import ModelProfile, TierConfig
from magi.config.yamlfile import MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES, load_yaml_file
from magi.errors import (
    ConfigError,
    ConfigFileError,
    InvalidProfileNameError,
    ProfileExistsError,
    ProfileWriteError,
)
from magi.fileio import atomic_write_text
from magi.profiles.manager import normalize_profile_name

from .conftest import ROOT
from .seed_profiles import SEED_YAML

DEV = SEED_YAML["development"]


def _alias_bomb() -> str:
    """Nine levels of ten aliases: 10**9 strings once OmegaConf copies every alias."""
    lines = [DEV, 'lol0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"lol{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


#: kind -> (file content, what the one-line error says)
BAD_FILES: dict[str, tuple[bytes, str]] = {
    "alias bomb": (_alias_bomb().encode(), f"aliases expand to more than {MAX_NODES:,} values"),
    "recursive alias": (
        DEV.encode() + b"loop: &loop\n  again: *loop\n",
        "refers to the value that contains it",
    ),
    "not UTF-8": (
        DEV.replace('"Development"', '"Caf\u00e9"').encode("latin-1"),
        "line 2: not UTF-8 text (byte 0xe9 at offset 21); save the file as UTF-8",
    ),
    "deep nesting": (
        DEV.encode() + b"deep: " + b"[" * 5000 + b"]" * 5000 + b"\n",
        f"nested more than {MAX_DEPTH} levels deep",
    ),
    "5,001-digit integer": (
        DEV.replace("stage1_max_tokens: 500", "stage1_max_tokens: " + "9" * 5001).encode(),
        "an integer of 5,001 characters; at most 100 are allowed",
    ),
    "tab indentation": (
        DEV.replace("  enabled: true", "\tenabled: true").encode(),
        "found character '\\t' that cannot start any token (YAML indents with spaces",
    ),
    "duplicate key": (
        DEV.encode() + b"two_stage:\n  enabled: false\n",
        "line 25, column 1: duplicate key 'two_stage' (first at line 17)",
    ),
    "too large": (DEV.encode() + b"#" * MAX_FILE_BYTES, f"a config file may have at most {MAX_FILE_BYTES:,}"),
}
KINDS = sorted(BAD_FILES)


def _write_bad(folder: Path, kind: str, stem: str = "bad") -> Path:
    path = folder / f"{stem}.yaml"
    path.write_bytes(BAD_FILES[kind][0])
    return path


def _run(*args: str, conf_dir: Path, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "MAGI_CONF_DIR": str(conf_dir), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def _one_error_line(stderr: str, path: Path, fragment: str) -> None:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith(f"error: {path}: "), stderr
    assert fragment in lines[0], stderr


# -- item 5 and 9: one gate for every bad file -------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_load_yaml_file_refuses_with_the_file_and_problem(kind: str, tmp_path: Path) -> None:
    path = _write_bad(tmp_path, kind)
    with pytest.raises(ConfigFileError) as info:
        load_yaml_file(path)
    assert info.value.status_code == 422
    assert str(info.value).startswith(f"{path}: ")
    assert BAD_FILES[kind][1] in str(info.value)


@pytest.mark.parametrize("kind", KINDS)
def test_magi_validate_refuses_each_bad_file(kind: str, tmp_path: Path, capsys) -> None:
    path = _write_bad(tmp_path, kind)
    assert main(["validate", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    _one_error_line(captured.err, path, BAD_FILES[kind][1])


@pytest.mark.parametrize("kind", KINDS)
def test_profiles_list_marks_only_the_bad_file(kind: str, conf_dir: Path, capsys) -> None:
    folder = conf_dir / "profile"
    good = sorted(p.stem for p in folder.glob("*.yaml"))
    _write_bad(folder, kind, stem="aaa-bad")
    assert main(["--profiles-dir", str(folder), "profiles", "list"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert sorted(rows) == sorted([*good, "aaa-bad"])
    bad_row = rows.pop("aaa-bad")
    assert " INVALID " in bad_row and BAD_FILES[kind][1][:40] in bad_row
    assert not any("INVALID" in row for row in rows.values())
    assert "Development" in rows["development"] and "fast, powerful" in rows["development"]


@pytest.mark.parametrize("kind", KINDS)
def test_compose_refuses_each_bad_file_before_hydra_reads_it(kind: str, conf_dir: Path) -> None:
    path = _write_bad(conf_dir / "profile", kind)
    for call in (
        lambda: magi.compose(profile="bad", conf_dir=conf_dir),
        lambda: magi.compose(overrides=["profile=bad"], conf_dir=conf_dir),
    ):
        with pytest.raises(ConfigFileError) as info:
            call()
        assert str(info.value).startswith(f"{path}: ") and BAD_FILES[kind][1] in str(info.value)
    # the other profiles still compose
    assert magi.compose(profile="development", conf_dir=conf_dir).profile.name == "Development"


@pytest.mark.parametrize("kind", KINDS)
def test_run_py_refuses_each_bad_file(kind: str, conf_dir: Path, tmp_path: Path) -> None:
    path = _write_bad(conf_dir / "profile", kind)
    proc = _run(
        "profile=bad", f"hydra.run.dir={tmp_path / 'run'}", conf_dir=conf_dir, cwd=tmp_path, timeout=60
    )
    assert proc.returncode == 2, proc.stderr
    _one_error_line(proc.stderr, path, BAD_FILES[kind][1])
    assert proc.stdout == ""


def test_run_py_multirun_refuses_a_bad_file_among_the_swept_profiles(conf_dir: Path, tmp_path: Path) -> None:
    path = _write_bad(conf_dir / "profile", "alias bomb")
    proc = _run(
        "-m",
        "profile=development,bad",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        conf_dir=conf_dir,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    _one_error_line(proc.stderr, path, "alias bomb")
    assert not (tmp_path / "sweep").exists()  # refused before any job ran


def test_magi_route_refuses_an_alias_bomb(conf_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    path = _write_bad(conf_dir / "profile", "alias bomb")
    monkeypatch.setenv("MAGI_CONF_DIR", str(conf_dir))
    assert main(["route", "--profile", "bad", "Hi"]) == 2
    _one_error_line(capsys.readouterr().err, path, "alias bomb")


def test_a_bomb_in_the_primary_config_is_refused_too(conf_dir: Path) -> None:
    config = conf_dir / "config.yaml"
    config.write_text(config.read_text() + _alias_bomb().replace(DEV, ""))
    with pytest.raises(ConfigFileError) as info:
        magi.compose(conf_dir=conf_dir)
    assert str(info.value).startswith(f"{config}: ")


def test_yaml_that_is_merely_unusual_still_loads(tmp_path: Path) -> None:
    """Anchors, aliases and merge keys within the limits are fine; a merged key may be
    overridden (that is not a duplicate)."""
    path = tmp_path / "ok.yaml"
    path.write_text(
        "tier_defaults: &tier {expected_time_seconds: 3, max_score: 5.0}\n"
        "tiers:\n  - {<<: *tier, name: fast}\n  - {<<: *tier, name: powerful, max_score: .inf}\n"
        "nested: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n"
    )
    data = load_yaml_file(path)
    assert data["tiers"][1] == {"expected_time_seconds": 3, "max_score": float("inf"), "name": "powerful"}


# -- item 9: duplicate keys are refused by validate as Hydra refuses them ---------------------------------
def test_duplicate_keys_are_refused_by_validate_and_the_manager(conf_dir: Path, capsys) -> None:
    folder = conf_dir / "profile"
    path = _write_bad(folder, "duplicate key")
    assert main(["--profiles-dir", str(folder), "validate", "bad"]) == 2
    assert "duplicate key 'two_stage'" in capsys.readouterr().err
    with pytest.raises(ConfigFileError) as info:
        ProfileManager(folder).load_profile("bad")
    assert str(info.value) == f"{path}: {BAD_FILES['duplicate key'][1]}"


# -- item 7 and the 300-character name: names that cannot be selected -----------------------------------
def _profile(name: str) -> ModelProfile:
    return ModelProfile(
        name=name, enabled_models=["m"], tier_config=[TierConfig(name="fast", max_score=float("inf"))]
    )


@pytest.mark.parametrize("name", ["123", "nan", "inf", "true", "null", "1e3", "1_000", "False"])
def test_names_hydra_reads_as_values_are_refused_at_save(name: str, tmp_path: Path) -> None:
    manager = ProfileManager(tmp_path / "profile")
    with pytest.raises(InvalidProfileNameError) as info:
        manager.save_profile(_profile(name))
    assert info.value.status_code == 400
    assert f"'profile={name.lower()}' would be read as" in str(info.value)
    with pytest.raises(InvalidProfileNameError):
        normalize_profile_name(name)
    assert not (tmp_path / "profile").exists() or list((tmp_path / "profile").iterdir()) == []


@pytest.mark.parametrize("name", ["2024-eu", "v123", "123abc", "007"])
def test_names_with_digits_that_hydra_reads_as_names_work(name: str, conf_dir: Path) -> None:
    manager = ProfileManager(conf_dir / "profile")
    saved = manager.load_profile("fast-only").model_copy(update={"name": name})
    manager.save_profile(saved)
    assert magi.compose(profile=name, conf_dir=conf_dir).profile == saved


def test_profile_123_on_the_command_line_is_a_clear_error(conf_dir: Path, tmp_path: Path) -> None:
    shutil.copy(conf_dir / "profile" / "fast-only.yaml", conf_dir / "profile" / "123.yaml")  # made by hand
    proc = _run("profile=123", f"hydra.run.dir={tmp_path / 'run'}", conf_dir=conf_dir, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "ValueError" not in proc.stderr
    assert "profile=123: Hydra reads 123 as a number" in proc.stderr and "profile='123'" in proc.stderr
    with pytest.raises(ConfigError) as info:
        magi.compose(profile="123", conf_dir=conf_dir)
    assert "Hydra reads 123 as a number" in str(info.value)


def test_a_300_character_name_is_refused_everywhere(conf_dir: Path, tmp_path: Path, capsys) -> None:
    name = "x" * 300
    with pytest.raises(InvalidProfileNameError) as info:
        ProfileManager(conf_dir / "profile").save_profile(_profile(name))
    assert info.value.status_code == 400 and "at most 100" in str(info.value)
    assert main(["--profiles-dir", str(conf_dir / "profile"), "validate", name, f"{name}.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.count("error: Invalid profile name") == 2 and "Traceback" not in err
    proc = _run(f"profile={name}", f"hydra.run.dir={tmp_path / 'run'}", conf_dir=conf_dir, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(
        f"error: {conf_dir / 'profile' / name}.yaml: cannot open the file: File name too long"
    )


# -- item 10: create without overwrite is atomic; modes are kept ---------------------------------------
def test_two_threads_saving_one_new_name_exactly_one_wins(tmp_path: Path) -> None:
    trials = 50
    for trial in range(trials):
        manager = ProfileManager(tmp_path / f"t{trial}")
        barrier = threading.Barrier(2)
        outcomes: dict[str, str] = {}

        def save(
            who: str,
            manager: ProfileManager = manager,
            barrier: threading.Barrier = barrier,
            outcomes: dict[str, str] = outcomes,
        ) -> None:
            profile = _profile("Race").model_copy(update={"description": who})
            barrier.wait()
            try:
                manager.save_profile(profile, overwrite=False)
                outcomes[who] = "saved"
            except ProfileExistsError as exc:
                assert exc.status_code == 409
                outcomes[who] = "exists"

        threads = [threading.Thread(target=save, args=(who,)) for who in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes.values()) == ["exists", "saved"], f"trial {trial}: {outcomes}"
        (winner,) = [who for who, outcome in outcomes.items() if outcome == "saved"]
        assert manager.load_profile("race").description == winner
        assert sorted(p.name for p in manager.profiles_dir.iterdir()) == ["race.yaml"]  # no temp file left


def test_saving_keeps_an_existing_files_mode_and_new_files_follow_the_umask(tmp_path: Path) -> None:
    manager = ProfileManager(tmp_path / "profile")
    old_umask = os.umask(0o027)
    try:
        path = manager.save_profile(_profile("Modes"))
        assert stat.S_IMODE(path.stat().st_mode) == 0o640  # 0666 less the umask, not mkstemp's 0600
        path.chmod(0o664)
        manager.save_profile(_profile("Modes").model_copy(update={"description": "again"}))
        assert stat.S_IMODE(path.stat().st_mode) == 0o664
        assert manager.load_profile("modes").description == "again"
    finally:
        os.umask(old_umask)


def test_the_registry_keeps_its_mode_when_rewritten(tmp_path: Path) -> None:
    from magi.models.registry import ModelRegistry

    path = tmp_path / "registry.json"
    ModelRegistry().save(path)
    path.chmod(0o644)
    ModelRegistry(n_ctx=512).save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert ModelRegistry.load(path).n_ctx == 512


def test_atomic_create_refuses_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    atomic_write_text(path, "one", overwrite=False)
    with pytest.raises(FileExistsError):
        atomic_write_text(path, "two", overwrite=False)
    assert path.read_text() == "one" and sorted(tmp_path.iterdir()) == [path]


# -- failed writes are MAGI errors naming the file -----------------------------------------------------
def test_a_path_too_long_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path.joinpath(*["d" * 200] * 25)  # over PATH_MAX
    with pytest.raises(InvalidProfileNameError) as info:
        ProfileManager(folder).save_profile(_profile("Long"))
    assert info.value.status_code == 400
    assert str(folder / "long.yaml") in str(info.value) and "too long" in str(info.value)


def _in_tmpfs(tmp_path: Path, code: str, *, fill: bool = False, read_only: bool = False) -> str:
    """Run ``code`` with ``tmp_path/mnt`` a 64 KB tmpfs of its own (a user and mount
    namespace: no root needed); return its stdout. Skips where namespaces are not allowed."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    steps = [f"mount -t tmpfs -o size=64k tmpfs {mnt}", f"mkdir {mnt}/profile"]
    if fill:
        steps.append(f"(dd if=/dev/zero of={mnt}/filler bs=4k count=100 2>/dev/null || true)")
    if read_only:
        steps.append(f"mount -o remount,ro {mnt}")
    script = " && ".join([*steps, f'exec "{sys.executable}" -c "$0"'])
    try:
        proc = subprocess.run(
            ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, code],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    except FileNotFoundError:
        pytest.skip("unshare is not installed")
    if proc.returncode != 0 and "mount" in proc.stderr and not proc.stdout:
        pytest.skip(f"cannot mount a private tmpfs here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


SAVE_AND_REPORT = """
import sys
from pathlib import Path
from magi import ProfileManager
from magi.config.compose import check_config_files
from magi.config.profile import ModelProfile, TierConfig
from magi.errors import MAGIException
folder = Path(sys.argv[1]) / "mnt" / "profile"
profile = ModelProfile(name="Full", description="x" * 100_000, enabled_models=["m"],
                       tier_config=[TierConfig(name="fast")])
try:
    ProfileManager(folder).save_profile(profile)
except MAGIException as exc:
    print(type(exc).__name__, exc.status_code, exc)
    print(sorted(p.name for p in folder.iterdir()))
"""


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("fill", "the disk is full; free some space"),
        ("read_only", "the file system is read-only; save to a writable profiles folder"),
    ],
)
def test_a_full_disk_or_read_only_folder_is_a_clear_error(fault: str, expected: str, tmp_path: Path) -> None:
    code = SAVE_AND_REPORT.replace("sys.argv[1]", repr(str(tmp_path)))
    out = _in_tmpfs(tmp_path, code, **{fault: True})
    head, files = out.strip().splitlines()
    path = tmp_path / "mnt" / "profile" / "full.yaml"
    assert head == f"{ProfileWriteError.__name__} 503 Cannot save profile {path}: {expected}."
    assert files == "[]"  # nothing half-written


# -- the smaller ones: prompts, stop strings, health-check interval ------------------------------------
@pytest.mark.parametrize("prompt", ["''", "'   '"])
def test_an_empty_or_blank_prompt_is_an_error(prompt: str, conf_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        magi.compose(profile="demo", overrides=[f"prompt={prompt}"])
    assert "prompt: Value error, is empty" in str(info.value) or "prompt: is empty" in str(info.value)
    proc = _run(f"prompt={prompt}", f"hydra.run.dir={tmp_path / 'run'}", conf_dir=conf_dir, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "prompt:" in proc.stderr and "is empty" in proc.stderr
    assert ">>>" not in proc.stdout  # the built-in prompts did not run


def test_prompts_are_literal_text_never_interpolated() -> None:
    for text in ("What is ${runtime.n_ctx}?", "Unknown ${nope} and ${oc.env:HOME}"):
        cfg = magi.compose(profile="demo", overrides=[f"prompt='{text}'", "runtime.n_ctx=512"])
        assert cfg.prompt == text
        assert cfg.runtime.n_ctx == 512  # everything else is still resolved


def test_run_py_answers_the_prompt_as_typed(echo_runtime, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    proc = _run(
        "profile=fast-only",
        "prompt='What is ${runtime.n_ctx}?'",
        "runtime.prompt_template='{prompt}'",
        f"hydra.run.dir={tmp_path / 'run'}",
        *echo_runtime.overrides,
        conf_dir=ROOT / "conf",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert ">>> What is ${runtime.n_ctx}?\n" in proc.stdout and "256?" not in proc.stdout


@pytest.mark.parametrize(
    "override", ["runtime.stop=['']", "runtime.stop=['\\nQ:','']", "+runtime.models.m.stop=['']"]
)
def test_empty_stop_strings_are_refused(override: str) -> None:
    with pytest.raises(ConfigError) as info:
        magi.compose(profile="demo", overrides=[override])
    assert info.value.status_code == 422
    message = str(info.value)
    assert "stop: Value error, an empty stop string ends every answer" in message or (
        "stop: an empty stop string ends every answer" in message
    )
    assert ("runtime.models.m.stop" if "models" in override else "runtime.stop") in message


def test_health_check_interval_has_a_lower_bound() -> None:
    with pytest.raises(ConfigError) as info:
        magi.compose(profile="production", overrides=["profile.load_balancing.health_check_interval=1e-9"])
    assert "profile.load_balancing.health_check_interval" in str(info.value)
    assert "greater than or equal to 0.5" in str(info.value)
    cfg = magi.compose(profile="production", overrides=["profile.load_balancing.health_check_interval=0.5"])
    assert cfg.profile.load_balancing.health_check_interval == 0.5


# -- Ctrl-C in run.py -----------------------------------------------------------------------------------
def test_ctrl_c_in_run_py_exits_130_with_one_line(conf_dir: Path, tmp_path: Path) -> None:
    """SIGINT while run.py waits for a (stuck) model: status 130, one line, no traceback."""
    from magi.testing.servers import HangingServer

    (tmp_path / "models").mkdir()
    with HangingServer() as server:
        (conf_dir / "endpoints" / "stuck.yaml").write_text(
            f"stuck:\n  url: {server.url}\n  tier: fast\n  api: completions\n  read_timeout: 120\n"
        )
        (conf_dir / "profile" / "stuck.yaml").write_text(
            "profile: {name: Stuck}\nenabled_models: [stuck]\n"
            "tier_config: [{name: fast, max_score: .inf, expected_time_seconds: 120}]\n"
        )
        env = {**os.environ, "HYDRA_FULL_ERROR": "0", "MAGI_CONF_DIR": str(conf_dir), "PYTHONPATH": str(ROOT)}
        args = [
            "endpoints=stuck",
            "profile=stuck",
            "prompt=Hi",
            "models.demo=false",
            f"models.dirs=['{tmp_path / 'models'}']",
            f"models.registry='{tmp_path / 'registry.json'}'",
            f"hydra.run.dir={tmp_path / 'run'}",
        ]
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "run.py"), *args],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 120
            while not server.accepted and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert server.accepted, "run.py never sent the request"
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "interrupted", err
    assert ">>> Hi" in out


# -- item 5: every way a file reaches Hydra is checked first ------------------------------------------
BOMB = BAD_FILES["alias bomb"][0]


def _refused_by_run_py(proc: subprocess.CompletedProcess[str], path: Path) -> None:
    assert proc.returncode == 2, proc.stderr
    _one_error_line(proc.stderr, path, "alias bomb")
    assert proc.stdout == ""


def test_run_py_refuses_a_bomb_added_under_another_package(conf_dir: Path, tmp_path: Path) -> None:
    """``+group@package=option`` composes the option too (timeout: the old code hung)."""
    path = _write_bad(conf_dir / "profile", "alias bomb")
    proc = _run(
        "+profile@foo=bad", f"hydra.run.dir={tmp_path / 'run'}", conf_dir=conf_dir, cwd=tmp_path, timeout=60
    )
    _refused_by_run_py(proc, path)
    with pytest.raises(ConfigFileError):
        check_config_files(conf_dir, ["profile=demo", "+profile@foo=bad"])


#: A defaults-list entry of conf/profile/inc.yaml -> where it takes the bomb from (under conf/).
DEFAULTS_ENTRIES: dict[str, tuple[str, str]] = {
    "absolute group with a package": ("{/hidden@x: b}", "hidden/b.yaml"),
    "absolute group": ("{/hidden: b}", "hidden/b.yaml"),
    "relative group": ("{hidden: b}", "profile/hidden/b.yaml"),
    "a config of its own group": ("b", "profile/b.yaml"),
    "an absolute config path": ("/hidden/b", "hidden/b.yaml"),
    "optional": ("{optional /hidden: b}", "hidden/b.yaml"),
    "override": ("{override /hidden@x: b}", "hidden/b.yaml"),
    "an option list": ("{/hidden: [a, b]}", "hidden/b.yaml"),
    "through a clean file": ("{/hidden: mid}", "hidden/b.yaml"),  # mid.yaml's defaults take b
}


@pytest.mark.parametrize("case", sorted(DEFAULTS_ENTRIES))
def test_defaults_lists_are_followed(case: str, conf_dir: Path) -> None:
    entry, bomb = DEFAULTS_ENTRIES[case]
    (conf_dir / "profile" / "inc.yaml").write_text(f"defaults: [_self_, {entry}, demo]\n")
    (conf_dir / "hidden").mkdir()
    (conf_dir / "hidden" / "a.yaml").write_text("a: 1\n")
    (conf_dir / "hidden" / "mid.yaml").write_text("defaults: [{/hidden@y: b}, _self_]\nmid: 1\n")
    (conf_dir / bomb).parent.mkdir(parents=True, exist_ok=True)
    (conf_dir / bomb).write_bytes(BOMB)
    with pytest.raises(ConfigFileError) as info:
        check_config_files(conf_dir, ["profile=inc"])
    assert str(info.value).startswith(f"{conf_dir / bomb}: ")
    (conf_dir / bomb).write_text("ok: 1\n")
    check_config_files(conf_dir, ["profile=inc"])  # clean files pass


def test_defaults_lists_that_loop_end(conf_dir: Path) -> None:
    (conf_dir / "profile" / "a1.yaml").write_text("defaults: [a2, {/profile: a1}]\n")
    (conf_dir / "profile" / "a2.yaml").write_text("defaults: [a1]\n")
    check_config_files(conf_dir, ["profile=a1"])  # returns: Hydra reports the loop itself


def test_the_primary_configs_defaults_are_followed_too(conf_dir: Path) -> None:
    (conf_dir / "hidden").mkdir()
    (conf_dir / "hidden" / "b.yaml").write_bytes(BOMB)
    (conf_dir / "task" / "run.yaml").write_text(
        (conf_dir / "task" / "run.yaml").read_text() + "defaults: [/hidden/b]\n"
    )
    with pytest.raises(ConfigFileError) as info:
        check_config_files(conf_dir)
    assert str(info.value).startswith(f"{conf_dir / 'hidden' / 'b.yaml'}: ")


def test_run_py_follows_a_profiles_defaults_list(conf_dir: Path, tmp_path: Path) -> None:
    (conf_dir / "profile" / "inc.yaml").write_text("defaults: [{/hidden@x: b}, demo]\n")
    (conf_dir / "hidden").mkdir()
    path = conf_dir / "hidden" / "b.yaml"
    path.write_bytes(BOMB)
    proc = _run(
        "profile=inc", f"hydra.run.dir={tmp_path / 'run'}", conf_dir=conf_dir, cwd=tmp_path, timeout=60
    )
    _refused_by_run_py(proc, path)


@pytest.mark.parametrize("form", ["file-url", "plain", "relative", "primary config"])
def test_run_py_checks_the_hydra_searchpath(form: str, conf_dir: Path, tmp_path: Path) -> None:
    extra = tmp_path / "extra"
    (extra / "profile").mkdir(parents=True)
    path = extra / "profile" / "xbomb.yaml"
    path.write_bytes(BOMB)
    args = ["profile=xbomb", f"hydra.run.dir={tmp_path / 'run'}"]
    if form == "primary config":
        config = conf_dir / "config.yaml"
        text = config.read_text()
        assert text.count("\nhydra:\n") == 1
        config.write_text(text.replace("\nhydra:\n", f"\nhydra:\n  searchpath: ['file://{extra}']\n"))
    else:
        where = {"file-url": f"file://{extra}", "plain": str(extra), "relative": "extra"}[form]
        args.insert(0, f"hydra.searchpath=[{where}]")
    proc = _run(*args, conf_dir=conf_dir, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2, proc.stderr
    _one_error_line(proc.stderr, path, "alias bomb")  # a relative folder is named absolute


# -- item 5/3: an override Hydra cannot read is one line saying how to write it ----------------------
@pytest.mark.parametrize(
    ("override", "shown"),
    [
        ("prompt=caf\udce9", "prompt=caf\\xe9"),  # $'caf\xe9' unquoted: not UTF-8
        ("prompt='cost ${'", "prompt='cost ${'"),
        ("prompt=${foo", "prompt=${foo"),
    ],
)
def test_run_py_explains_an_override_hydra_cannot_read(override: str, shown: str, tmp_path: Path) -> None:
    proc = _run(
        override, f"hydra.run.dir={tmp_path / 'run'}", conf_dir=ROOT / "conf", cwd=tmp_path, timeout=60
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "Exception" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot read the override {shown}: "), line
    assert "prompt='...'" in line and "\\${" in line and 'magi ask "..."' in line
    assert proc.stdout == ""
    with pytest.raises(ConfigError) as info:
        magi.compose(overrides=[override])
    assert shown in str(info.value)


def test_an_escaped_interpolation_in_a_prompt_is_the_literal_text() -> None:
    """The fix the message above suggests works: ``\\${`` is a literal ``${``."""
    assert magi.compose(profile="demo", overrides=["prompt='cost \\${'"]).prompt == "cost ${"


def test_run_py_refuses_a_quoted_non_utf8_prompt_naming_the_byte(tmp_path: Path) -> None:
    """Quoted, Hydra reads it; validation then refuses it, naming the byte (no model is loaded)."""
    proc = _run(
        "prompt='caf\udce9'", f"hydra.run.dir={tmp_path / 'run'}", conf_dir=ROOT / "conf", cwd=tmp_path
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "prompt: is not valid Unicode text" in proc.stderr and "the byte 0xE9" in proc.stderr
