"""The malloc of a fresh install: `pip install -r requirements.txt` brings mimalloc, and training through
`run.sh` or `python main.py` runs on it (tcmalloc where the system has it); ALLOCATOR=glibc opts out. The
other commands stay on glibc: OpenVINO's converter aborts under a preloaded malloc."""
import os
import subprocess
import sys

from conftest import ROOT
from utils.allocator import find_allocator, find_mimalloc

PROBE = ("import sys; sys.path.insert(0, {root!r}); from utils.allocator import reexec_with_allocator, "
         "active_allocator; reexec_with_allocator(); print(active_allocator(), sys.argv[1:])")


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ALLOCATOR")}
    env.pop("CONDENSE_ALLOCATOR_REEXEC", None)
    return {**env, **extra}


def _probe(**extra):
    out = subprocess.run([sys.executable, "-c", PROBE.format(root=str(ROOT)), "a", "--b"], env=_env(**extra),
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def _name(lib):
    return "tcmalloc" if "tcmalloc" in lib else "mimalloc"


def test_requirements_bring_a_preloadable_malloc():
    lib = find_mimalloc()
    assert lib and os.path.isfile(lib), "the cmeel-mimalloc wheel (requirements.txt) ships no libmimalloc.so"


def test_reexec_runs_python_on_the_allocator_and_keeps_the_arguments():
    assert _probe() == f"{_name(find_allocator())} ['a', '--b']"
    assert _probe(ALLOCATOR="glibc") == "glibc ['a', '--b']"


def test_main_py_and_run_sh_train_on_the_allocator(tmp_path, tiny_config):
    expected = _name(find_allocator())
    for launcher in ([sys.executable, "main.py"], ["sh", "run.sh"]):
        name = launcher[0].split("/")[-1]
        path = tiny_config(name, synthetic_train_size=32, model_args={"stages": [1, 1], "growth": [4, 4]})
        out = subprocess.run([*launcher, path], cwd=ROOT, env=_env(PYTHON=sys.executable),
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-2000:]
        assert f"malloc: {expected})" in out.stdout + out.stderr, (launcher, out.stdout[-2000:])
        # the same launcher exports to OpenVINO (on glibc: under the training malloc it aborts)
        out = subprocess.run([*launcher, path, "--mode", "export", "--set", 'export_formats=["openvino"]'],
                             cwd=ROOT, env=_env(PYTHON=sys.executable), capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-2000:]
        assert (tmp_path / "exp" / name / "out" / f"{name}.xml").is_file()
