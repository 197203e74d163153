"""What the benchmark scripts share: timing, the measuring subprocess, its allocator, the table, the JSON.

Every figure is timed by :func:`deploy.timing.time_calls` (``warmup`` untimed calls, then one
``time.perf_counter`` time per call); a measurement reports the median (``ms``) and the fastest call
(``ms_min``). Each measurement runs in a fresh subprocess of the script that asked for it, so that its
peak RSS (``ru_maxrss``, whole process: torch, model, activations, allocator caching) is honest, on the C
allocator that :func:`allocator_env` picks (the allocator is part of the measurement: see
benchmarks/README.md).

:func:`main` is the command line of a table of rows (benchmarks/suite.py, benchmarks/loader.py): each row
measures its variants (``baseline`` and ``optimized``, some rows also ``compiled``) ``--repeat`` times,
alternating, and keeps each variant's fastest median, so that a shared machine's slow phases hit every
variant alike. ``--quick`` measures tiny settings once, in-process (for the tests).
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from deploy.timing import device_name, time_calls  # noqa: E402

# row name -> (description, kind, settings); kind 'train' (img/s), 'infer' (ms at batch 1) or 'loader' (img/s)
Rows = Dict[str, Tuple[str, str, dict]]
# measure(row, variant, quick, threads, warmup, iters, profile) -> the variant's JSON-ready result
Measure = Callable[..., dict]


def settings(rows: Rows, row: str, quick: bool) -> dict:
    """The row's settings, its ``quick`` overrides applied under ``--quick``."""
    s = dict(rows[row][2])
    q = s.pop("quick", {})
    if quick:
        s.update(q)
    s.setdefault("kwargs", {})
    return s


def timed(fn: Callable[[], object], warmup: int, iters: int) -> dict:
    """``ms`` (median) and ``ms_min`` of ``iters`` calls of ``fn`` after ``warmup`` untimed ones."""
    times = time_calls(fn, warmup, iters)
    return dict(ms=statistics.median(times), ms_min=min(times))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_name() -> str:
    import torch
    return device_name(torch.device("cpu"))


def torch_version() -> str:
    import torch
    return torch.__version__


def load_avg() -> Optional[float]:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def allocator_env(choice: str, deploy: bool = False) -> Tuple[dict, str]:
    """(environment for the measuring subprocesses, allocator label). ``deploy``: 'auto' is glibc, as for
    main.py's export and runtime commands (OpenVINO aborts under a preloaded malloc)."""
    from utils.allocator import find_allocator, find_tcmalloc
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_MMAP_THRESHOLD_")}
    lib = find_tcmalloc()
    if choice == "tcmalloc" and not lib:
        raise SystemExit("error: --allocator tcmalloc: no tcmalloc found; install it (Debian/Ubuntu: "
                         "apt install libtcmalloc-minimal4) or pick --allocator glibc")
    if choice == "auto" and find_allocator() and not deploy:      # what main.py trains on
        env["LD_PRELOAD"] = find_allocator()
        return env, f"{'tcmalloc' if lib else 'mimalloc'} ({env['LD_PRELOAD']})"
    if choice == "tcmalloc":
        env["LD_PRELOAD"] = lib
        return env, f"tcmalloc ({lib})"
    if choice == "mimalloc":
        from utils.allocator import find_mimalloc
        lib = find_mimalloc()
        if not lib:
            raise SystemExit("error: --allocator mimalloc: pip install cmeel-mimalloc")
        env["LD_PRELOAD"] = lib
        return env, f"mimalloc ({lib})"
    if choice == "glibc-mmap":
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
        return env, "glibc, MALLOC_MMAP_THRESHOLD_=131072"
    return env, "glibc"


def add_allocator_arg(ap: argparse.ArgumentParser, default_help: str) -> None:
    ap.add_argument("--allocator", choices=("auto", "tcmalloc", "mimalloc", "glibc", "glibc-mmap"), default="auto",
                    help=f"C allocator of the measuring subprocesses (auto: {default_help})")


def run_script(script: str, args: Sequence[str], env: dict):
    """Run ``python script args`` from the repository root; the JSON its last output line holds, or
    ``{'error': [its last error line]}`` when it fails."""
    p = subprocess.run([sys.executable, os.path.abspath(script)] + list(args), capture_output=True, text=True,
                       env=env, cwd=ROOT)
    if p.returncode != 0:
        return dict(error=(p.stderr or p.stdout).strip().splitlines()[-1:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def timing_args(args: argparse.Namespace) -> List[str]:
    """The command-line flags that pass ``args``' timing settings on to a measuring subprocess."""
    out = ["--threads", str(args.threads)] + (["--quick"] if args.quick else [])
    for flag in ("iters", "warmup"):
        if getattr(args, flag) is not None:
            out += [f"--{flag}", str(getattr(args, flag))]
    return out


def print_profile(fn: Callable[[], object], calls: int = 3, rows: int = 20) -> None:
    """torch.profiler's top operators of ``calls`` calls of ``fn`` (by self CPU time, then by input shapes),
    to stderr."""
    from torch.profiler import profile
    with profile(record_shapes=True) as prof:
        for _ in range(calls):
            fn()
    averages = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in averages) or 1.0
    print(f"top operators over {calls} call(s) (share of self CPU time):", file=sys.stderr)
    for e in sorted(averages, key=lambda e: -e.self_cpu_time_total)[:rows]:
        print(f"  {e.key:40s} {100.0 * e.self_cpu_time_total / total:5.1f} %  {e.count // calls:5d} calls/iter",
              file=sys.stderr)
    print("by input shapes:", file=sys.stderr)
    print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=rows,
                                                             max_name_column_width=28, max_shapes_column_width=60),
          file=sys.stderr)


def format_table(rows: List[dict]) -> str:
    lines = ["| workload | baseline | optimized | speed ratio | torch.compile (ratio) | "
             "baseline peak RSS (MB) | optimized peak RSS (MB) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        b, o, c = r.get("baseline") or {}, r.get("optimized") or {}, r.get("compiled") or {}
        if "error" in b or "error" in o or not b or not o:
            lines.append(f"| {r['description']} | error | error | - | - | - | - |")
            continue
        if r["kind"] == "loader":
            cell = lambda d: f"{d['img_s']:.0f} img/s"  # noqa: E731
        elif r["kind"] == "train":
            cell = lambda d: f"{d['img_s']:.1f} img/s"  # noqa: E731
        else:
            cell = lambda d: f"{d['ms']:.2f} ms"  # noqa: E731
        comp = f"{cell(c)} ({r['compiled_ratio']:.2f}x)" if "ms" in c else ("error" if c else "-")
        lines.append(f"| {r['description']} | {cell(b)} | {cell(o)} | {r['speed_ratio']:.2f}x | {comp} | "
                     f"{b['peak_rss_mb']:.0f} | {o['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def _measure(measure: Measure, row: str, variant: str, args: argparse.Namespace, profile: bool = False) -> dict:
    from utils.allocator import active_allocator
    out = measure(row, variant, args.quick, args.threads, args.warmup, args.iters, profile)
    out.update(peak_rss_mb=peak_rss_mb(), allocator=active_allocator())
    return out


def main(doc: str, script: str, rows: Rows, variants: Dict[str, Tuple[str, ...]], measure: Measure,
         default_json: str, argv: Optional[Sequence[str]] = None) -> int:
    """The command line of a table of ``rows`` (see the module docstring); ``variants``: kind -> the
    variants a row of that kind measures, ``baseline`` first."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny settings, 1 iteration, in-process")
    ap.add_argument("--json", default=None, help=f"write the results here (default benchmarks/{default_json})")
    ap.add_argument("--rows", default=None, help=f"comma-separated subset of {', '.join(rows)}")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=None, help="timed iterations (default: the row kind's)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed iterations (default: the row kind's)")
    ap.add_argument("--repeat", type=int, default=2,
                    help="measure each variant this many times, alternating, and keep the fastest median")
    compiled = any("compiled" in v for v in variants.values())
    if compiled:
        ap.add_argument("--no-compile", dest="compile", action="store_false",
                        help="skip the torch.compile variant of the inference rows")
    add_allocator_arg(ap, "what run.sh and main.py use: tcmalloc if installed, else the pip-installed mimalloc")
    ap.add_argument("--profile", nargs=2, metavar=("ROW", "VARIANT"),
                    help="measure one variant of one row in this process and print its top operators")
    ap.add_argument("--measure", nargs=2, metavar=("ROW", "VARIANT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    one = args.measure or args.profile
    if one:
        if one[0] not in rows or one[1] not in variants[rows[one[0]][1]]:
            ap.error(f"unknown row/variant {one}; rows: {', '.join(rows)}; variants: "
                     f"{', '.join(sorted({v for vs in variants.values() for v in vs}))}")
        print(json.dumps(_measure(measure, one[0], one[1], args, profile=bool(args.profile))))
        return 0
    names = list(rows) if not args.rows else [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in names if r not in rows]
    if unknown:
        ap.error(f"unknown rows {unknown}; choose from {', '.join(rows)}")
    env, allocator = allocator_env(args.allocator)
    results = []
    for row in names:
        entry = dict(row=row, description=rows[row][0], kind=rows[row][1], load_avg_1min=load_avg())
        measured = tuple(v for v in variants[entry["kind"]]
                         if v != "compiled" or (compiled and args.compile and not args.quick))
        for variant in measured:
            entry[variant] = None
        for _ in range(1 if args.quick else args.repeat):
            for variant in measured:           # alternate, so slow phases of a shared machine hit all alike
                r = (_measure(measure, row, variant, args) if args.quick
                     else run_script(script, ["--measure", row, variant] + timing_args(args), env))
                if "error" in r:
                    r.update(row=row, variant=variant)
                best = entry[variant]
                runs = (best or {}).get("runs_ms", []) + [r.get("ms")]
                if best is None or "error" in best or ("ms" in r and r["ms"] < best["ms"]):
                    best = r
                best["runs_ms"] = runs
                entry[variant] = best
        b = entry["baseline"]
        for variant in measured[1:]:
            if "ms" in b and "ms" in entry[variant]:
                entry[f"{variant}_ratio"] = b["ms"] / entry[variant]["ms"]
        entry["speed_ratio"] = entry.get("optimized_ratio")
        results.append(entry)
        print(f"{row}: " + ", ".join(f"{v} {entry[v].get('ms', float('nan')):.1f} ms "
                                     f"{entry[v].get('peak_rss_mb', float('nan')):.0f} MB" for v in measured),
              file=sys.stderr, flush=True)
    table = format_table(results)
    print(table)
    print(f"\n{cpu_name()} ({os.cpu_count()} logical CPUs), torch {torch_version()}, "
          f"threads {args.threads}, 1-min load average at start/end: "
          f"{results[0]['load_avg_1min'] if results else '-'} / {load_avg()}; "
          f"allocator {allocator}"
          f"{'; QUICK (tiny settings)' if args.quick else ''}")
    from deploy.benchmark import write_json
    write_json(dict(rows=results, table=table, quick=args.quick, threads=args.threads, repeat=args.repeat,
                    cpu=cpu_name(), cpu_count=os.cpu_count(), torch_version=torch_version(), allocator=allocator),
               args.json or os.path.join(ROOT, "benchmarks", default_json))
    return 0
