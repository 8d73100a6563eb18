"""The distribution: one import package, tts_history, with hooks/plugin/index as subpackages,
installable both normally and in editable mode into a fresh virtual environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """The committed tree alone (as a fresh clone has it), so builds leave nothing in ROOT and
    a file that was never committed cannot make the test pass."""
    out = tmp_path_factory.mktemp("source")
    tracked = run("git", "-C", str(ROOT), "ls-files", "-z").stdout.split("\0")
    for name in filter(None, tracked):
        if (ROOT / name).is_file():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, out / name)
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory, source) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source))
    (built,) = out.glob("tts_history-*.whl")
    return built


def test_wheel_holds_only_the_tts_history_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"tts_history"}
    for sub in ("hooks", "plugin", "index", "library", "cli", "host"):
        assert f"tts_history/{sub}/__init__.py" in names
    assert not any(name.startswith("tts_history/tests/") for name in names)
    assert "tts_history/library/stignore" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "tts-history = tts_history.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def fresh_venv(path: Path) -> Path:
    """A new virtual environment that borrows this one's dependencies (so nothing downloads
    but the build backend), with the project itself not installed."""
    venv.create(path, with_pip=True)
    python = path / "bin" / "python"
    site = run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    (Path(site.stdout.strip()) / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


IMPORTS = (
    "import tts_history, tts_history.hooks, tts_history.plugin, tts_history.index;"
    "from tts_history import hookimpl, get_plugin_manager;"
    "import importlib.util as u;"
    "assert all(u.find_spec(n) is None for n in ('hooks', 'plugin', 'index', 'library', 'cli'))"
)


@pytest.mark.parametrize("editable", [False, True], ids=["install", "editable"])
def test_installs_into_a_fresh_venv(tmp_path, source, editable):
    python = fresh_venv(tmp_path / "venv")
    target = ["-e", str(source)] if editable else [str(source)]
    run(str(python), "-m", "pip", "install", "-q", "--no-deps", *target)
    # run from elsewhere, so the source tree is not what gets imported by accident
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run(str(python), "-c", IMPORTS, cwd=tmp_path, env=env)
    result = run(str(tmp_path / "venv" / "bin" / "tts-history"), "--version", cwd=tmp_path, env=env)
    assert "version" in result.stdout


def test_the_tests_run_from_a_clone_named_as_git_names_it(tmp_path, source):
    """A clone's folder is called tts-history, not a Python name: the suite must not import
    the package's own __init__.py under that name."""
    clone = tmp_path / "tts-history"
    shutil.copytree(source, clone)
    result = run(
        sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "tests/test_hookspec_doc.py", cwd=clone
    )
    assert " passed" in result.stdout and "error" not in result.stdout
