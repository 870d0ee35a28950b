"""`make bench`: time each benchmark case against its peer on generated landscapes, in separate processes.

For every size, the landscape is generated once (bench.generate, cached in data/bench/) and each side of each
case runs in a fresh Python process, so its peak RSS is its own: the child's high-water mark since it started
(``VmHWM``, imports included), which it reads itself at its end. (``os.wait4``'s ``ru_maxrss`` stands in only
without /proc or for a killed child: Linux counts in it the image before ``exec``, a copy of this process, so
after a landscape was generated here every side reported this process's ~1.2 GB at 144 Mpx, ~2.5 GB at 576.)
Wall time is measured inside the child around the work only
(graph building + compute for ours; read + metrics for the peer), so interpreter start-up and imports are
not counted on either side. A side that exceeds ``--peer-timeout`` or ``--max-rss-gb`` is killed; the peer is
then run at the ``--peer-fallback`` size and its time extrapolated linearly in pixels (marked "extrapolated").

Results are printed as a table and appended to data/bench/results.csv (one row per case, size and side, with
a UTC timestamp and the git commit) so runs can be compared across commits; the metric values and the
comparison of the last run go to data/bench/last_run.json.

    python -m bench.run                          # sizes 16 and 144 Mpx, every case
    python -m bench.run --sizes 16 36 --full     # also time ours with ECA + polygons
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import connectivity, degradation, generate, mining, pipeline

CASES = {m.NAME: m for m in (connectivity, degradation, mining, pipeline)}
RESULTS = generate.BENCH_DIR / "results.csv"
LAST_RUN = generate.BENCH_DIR / "last_run.json"
FIELDS = ["timestamp_utc", "commit", "host", "cpus", "other_cpu_pct", "case", "size_mpx", "rows", "cols", "side", "status", "wall_s",
          "cpu_s", "mpx_per_s", "peak_rss_mb", "speedup_vs_peer", "identical", "compared", "max_rel_diff", "chunk_px",
          "workers", "year", "stages_s", "notes"]
GOAL_SPEEDUP, GOAL_RSS_MB, GOAL_SIZE = 30.0, 2048, "144"


def comparison(case, side: str, results: dict[str, dict]) -> dict | None:
    """``case.compare`` of one of our sides against the case's peer (PEER), with our run at the fallback size
    when the peer's time was extrapolated; None for any peer (a side in PEERS: one reused from another case
    holds that case's values), a ``-full`` side, or missing values."""
    peer = results.get(case.PEER)
    r = results[side]
    if side in getattr(case, "PEERS", (case.PEER,)) or side.endswith("full") or not (peer and peer["values"] and r["values"]):
        return None
    mine = results["ours@fallback"]["values"] if peer.get("extrapolated") else r["values"]
    return case.compare(mine, peer["values"])


# ------------------------------------------------------------------------------------------------ child
def _worker(args: argparse.Namespace) -> None:
    case, side = args.worker
    ds = generate.Dataset.open(Path(args.dataset))
    result = CASES[case].run_side(side, ds, year=args.year, chunk_px=args.chunk, workers=args.workers)
    Path(args.out).write_text(json.dumps({**result, "own_peak_rss_mb": own_peak_rss_mb()}))


def own_peak_rss_mb() -> float | None:
    """This process's peak RSS since it started (VmHWM, MB); None without /proc (not Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _run_child(case: str, side: str, ds: generate.Dataset, args: argparse.Namespace, *, timeout_s: float,
               max_rss_mb: float) -> dict:
    """Run one side in a fresh process; returns its result plus status, peak_rss_mb."""
    with tempfile.NamedTemporaryFile(suffix=".json", dir=generate.BENCH_DIR, delete=False) as tmp:
        out = Path(tmp.name)
    cmd = [sys.executable, "-m", "bench.run", "--worker", case, side, "--dataset", str(ds.directory), "--year",
           str(args.year), "--chunk", str(args.chunk), "--workers", str(args.workers), "--out", str(out)]
    env = {**os.environ, "GDAL_CACHEMAX": "256", "PYTHONWARNINGS": "ignore"}
    busy0, started = _busy_cpu_s(), time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=generate.ROOT, env=env)
    status = "ok"
    try:
        while True:
            pid, wait_status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            elapsed = time.perf_counter() - started
            if status == "ok" and _rss_mb(proc.pid) > max_rss_mb:
                status = f"killed: RSS over {max_rss_mb / 1024:.0f} GB after {elapsed:.0f} s"
                os.kill(proc.pid, signal.SIGKILL)
            elif status == "ok" and elapsed > timeout_s:
                status = f"killed: over {timeout_s:.0f} s"
                os.kill(proc.pid, signal.SIGKILL)
            time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(wait_status)
        result = {"seconds": math.nan, "stages": {}, "values": {}, "notes": ""}
        if status == "ok" and proc.returncode != 0:
            status = f"failed: exit code {proc.returncode}"
        if status == "ok":
            result = json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)
    wall = time.perf_counter() - started
    others = _busy_cpu_s() - busy0 - usage.ru_utime - usage.ru_stime  # CPU seconds used by other processes
    own_peak = result.pop("own_peak_rss_mb", None)
    result.update(status=status, peak_rss_mb=own_peak or usage.ru_maxrss / 1024, process_s=wall,
                  cpu_s=usage.ru_utime + usage.ru_stime, other_cpu_pct=max(0.0, 100 * others / (wall * os.cpu_count())))
    return result


def _wait_idle(max_wait_s: float, *, threshold_pct: float = 15.0, sample_s: float = 3.0) -> float:
    """Wait (up to max_wait_s) until other processes use under threshold_pct of the machine over sample_s;
    returns the last measured share (%). Timings on a shared machine are otherwise pessimistic and noisy."""
    deadline = time.perf_counter() + max_wait_s
    while True:
        before = _busy_cpu_s()
        time.sleep(sample_s)
        share = 100 * (_busy_cpu_s() - before) / (sample_s * os.cpu_count())
        if share < threshold_pct or time.perf_counter() > deadline:
            return share
        print(f"    waiting for an idle machine (others use {share:.0f} %) ...", flush=True)


def _busy_cpu_s() -> float:
    """CPU seconds spent busy by the whole machine since boot (/proc/stat), 0 where unavailable."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]
    except OSError:
        return 0.0
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


# ------------------------------------------------------------------------------------------------ parent
def _commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=generate.ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "pipeline", "bench"], cwd=generate.ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _fmt(x: float, digits: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmarks: ours vs peers, per size (see bench/README.md)")
    parser.add_argument("--sizes", nargs="+", choices=sorted(generate.SIZES, key=int),
                        help="landscape sizes, Mpx per year (default: 16 144; with --full: 16 144 576)")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--chunk", type=int, default=2048, help="dask chunk size, px (default 2048)")
    parser.add_argument("--workers", type=int, default=2, help="threads of our scheduler (default 2)")
    parser.add_argument("--year", type=int, default=generate.Params.years[0], help="year timed (default 2020)")
    parser.add_argument("--full", action="store_true",
                        help="also time the optional sides (ours with ECA + polygons) and, unless --sizes is given, 576 Mpx")
    parser.add_argument("--no-peer", action="store_true", help="time our side only")
    parser.add_argument("--peer-timeout", type=float, default=900, help="seconds before a peer is killed (900)")
    parser.add_argument("--max-rss-gb", type=float, default=16, help="RSS at which any side is killed (16 GB)")
    parser.add_argument("--peer-fallback", default="36", choices=sorted(generate.SIZES, key=int),
                        help="size at which a killed peer is re-run and extrapolated from (36)")
    parser.add_argument("--wait-idle", type=float, default=600,
                        help="before each timed run, wait up to this many seconds for other processes to leave the "
                             "CPUs (< 15 %% busy); 0 to start at once (default 600)")
    parser.add_argument("--worker", nargs=2, metavar=("CASE", "SIDE"), help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sizes is None:
        args.sizes = ["16", "144", "576"] if args.full else ["16", "144"]
    if args.worker:
        _worker(args)
        return 0
    if not args.no_peer and any(CASES[name].PEER for name in args.cases):
        try:
            import pylandstats  # noqa: F401
        except ImportError:
            parser.error("pylandstats (the peer) is not installed: pip install -e '.[dev]', or use --no-peer")

    generate.BENCH_DIR.mkdir(parents=True, exist_ok=True)
    commit, stamp = _commit(), datetime.now(UTC).isoformat(timespec="seconds")
    host, cpus = platform.node(), os.cpu_count()
    rows_out, details = [], []
    measured: dict[tuple[str, str, str], dict] = {}  # (case, side, size) -> result, for REUSE
    print(f"bench: commit {commit}, {cpus} CPUs, chunk {args.chunk}, {args.workers} threads, year {args.year}")
    if os.getloadavg()[0] > 0.5:
        print(f"  note: load average {os.getloadavg()[0]:.1f}: other processes use the CPUs; each row records the "
              "share of the machine they took while it ran (other_cpu_pct)")
    for size in args.sizes:
        ds = generate.ensure(generate.Params.of_size(size))
        for name in args.cases:
            case = CASES[name]
            peers = getattr(case, "PEERS", (case.PEER,))
            sides = [s for s in case.SIDES if not (args.no_peer and s in peers)
                     and size in getattr(case, "SIDE_SIZES", {}).get(s, (size,))]
            sides += list(case.OPTIONAL_SIDES) if args.full else []
            results = {}
            for side in sides:
                is_peer = side == case.PEER
                reuse = getattr(case, "REUSE", {}).get(side)
                if reuse and (*reuse, size) in measured:  # the same measurement made by another case in this run
                    results[side] = r = {**measured[(*reuse, size)], "pixel_years": 1}
                    r["notes"] = f"measured by case {reuse[0]} in this run; {r.get('notes', '')}"
                    r["mpx"] = ds.params.mpx
                    print(f"  {name} {size} Mpx: {side}: reusing case {reuse[0]}'s measurement", flush=True)
                    continue
                print(f"  {name} {size} Mpx: {side} ...", flush=True)
                if args.wait_idle > 0:
                    _wait_idle(args.wait_idle)
                results[side] = r = _run_child(name, side, ds, args, max_rss_mb=args.max_rss_gb * 1024,
                                               timeout_s=args.peer_timeout if is_peer else 4 * 3600)
                measured[(name, side, size)] = r
                # Mpx/s counts pixel-years processed: x 2 for the cases that take both years (a side may say otherwise)
                r["mpx"], r["extrapolated"] = ds.params.mpx * r.get("pixel_years", getattr(case, "PIXEL_YEARS", 1)), False
                print(f"    {r['status']}: {_fmt(r['seconds'])} s, peak RSS {r['peak_rss_mb']:,.0f} MB, process CPU "
                      f"{r['cpu_s']:.1f} s, other processes {r['other_cpu_pct']:.0f} % of the machine", flush=True)
                if is_peer and r["status"].startswith("killed") and args.peer_fallback != size:
                    small = generate.ensure(generate.Params.of_size(args.peer_fallback))
                    print(f"  {name}: peer at {args.peer_fallback} Mpx, extrapolated to {size} Mpx ...", flush=True)
                    fb = _run_child(name, side, small, args, timeout_s=args.peer_timeout, max_rss_mb=args.max_rss_gb * 1024)
                    ours_fb = _run_child(name, "ours", small, args, timeout_s=3600, max_rss_mb=args.max_rss_gb * 1024)
                    factor = ds.params.mpx / small.params.mpx
                    r.update(seconds=fb["seconds"] * factor, values=fb["values"], extrapolated=True,
                             notes=f"{r['status']}; time = {args.peer_fallback} Mpx run x {factor:g} (linear), "
                                   f"RSS measured at {args.peer_fallback} Mpx; values compared at {args.peer_fallback} Mpx",
                             peak_rss_mb=fb["peak_rss_mb"], status="extrapolated", stages=fb["stages"])
                    results["ours@fallback"] = ours_fb
            peer = results.get(case.PEER)
            for side, r in results.items():
                if side == "ours@fallback":
                    continue
                cmp = comparison(case, side, results)
                speedup = (peer["seconds"] / r["seconds"]) if (peer and side not in peers and r["seconds"]) else math.nan
                if side not in peers and len(peers) > 1:  # wall-time ratio to every peer measured in this run
                    ratios = [f"{r['seconds'] / results[q]['seconds']:.2f}x the wall time of {q}" for q in peers
                              if q in results and results[q]["seconds"] == results[q]["seconds"]]
                    r["notes"] = "; ".join([r.get("notes", ""), *ratios])
                row = {
                    "timestamp_utc": stamp, "commit": commit, "host": host, "cpus": cpus,
                    "other_cpu_pct": round(r["other_cpu_pct"]), "case": name,
                    "size_mpx": size, "rows": ds.params.rows, "cols": ds.params.cols, "side": side,
                    "status": r["status"], "wall_s": round(r["seconds"], 3), "cpu_s": round(r.get("cpu_s", math.nan), 2), "mpx_per_s": round(r["mpx"] / r["seconds"], 3),
                    "peak_rss_mb": round(r["peak_rss_mb"]), "speedup_vs_peer": round(speedup, 2) if speedup == speedup else "",
                    "identical": "" if cmp is None else ("yes" if cmp["identical"] else "no"),
                    "compared": "" if cmp is None else cmp["compared"],
                    "max_rel_diff": "" if cmp is None else f"{cmp['max_rel_diff']:.2e}",
                    "chunk_px": args.chunk if side not in peers else "", "workers": args.workers if side not in peers else 1,
                    "year": args.year if getattr(case, "PIXEL_YEARS", 1) == 1 else "-".join(map(str, ds.params.years)), "stages_s": json.dumps({k: round(v, 2) for k, v in r["stages"].items()}),
                    "notes": r.get("notes", ""),
                }
                rows_out.append(row)
                details.append({**row, "values": r["values"], "comparison": cmp})
    _append_csv(rows_out)
    LAST_RUN.write_text(json.dumps(details, indent=1, default=str))
    _print_table(rows_out)
    return 0


def _append_csv(rows: list[dict]) -> None:
    new = not RESULTS.exists()
    with RESULTS.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def _print_table(rows: list[dict]) -> None:
    head = ["case", "Mpx", "side", "wall s", "Mpx/s", "peak RSS MB", "speedup", "identical"]
    lines = []
    for r in rows:
        ident = r["identical"] and f"{r['identical']} ({r['compared']} values, max rel diff {r['max_rel_diff']})"
        wall = _fmt(r["wall_s"]) + (" (extrap.)" if r["status"] == "extrapolated" else "")
        lines.append([r["case"], r["size_mpx"], r["side"], wall, _fmt(r["mpx_per_s"]), f"{r['peak_rss_mb']:,}",
                      f"{r['speedup_vs_peer']}x" if r["speedup_vs_peer"] != "" else "-", ident or "-"])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=True)]
    print()
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in lines:
        print("| " + " | ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)) + " |")
    print()
    for r in rows:
        if r["stages_s"] != "{}":
            print(f"  {r['case']} {r['size_mpx']} Mpx {r['side']} stages (s): {r['stages_s']}")
        if r["status"] not in ("ok",):
            print(f"  {r['case']} {r['size_mpx']} Mpx {r['side']}: {r['status']}; {r['notes']}")
        elif len(getattr(CASES[r["case"]], "PEERS", ())) > 1:
            print(f"  {r['case']} {r['size_mpx']} Mpx {r['side']}: {r['notes']}")
    goal = [r for r in rows if r["size_mpx"] == getattr(CASES[r["case"]], "GOAL_SIZE", GOAL_SIZE) and r["side"] == "ours"
            and r["status"] == "ok"]
    for r in goal:
        target = getattr(CASES[r["case"]], "GOAL_MPX_PER_S", None)
        if target is not None:  # cases without a peer: a throughput goal
            print(f"goal at {r['size_mpx']} Mpx ({r['case']}): >= {target:g} Mpx/s: "
                  f"{'met' if r['mpx_per_s'] >= target else 'NOT met'} ({r['mpx_per_s']:.2f}); peak RSS <= {GOAL_RSS_MB} "
                  f"MB: {'met' if r['peak_rss_mb'] <= GOAL_RSS_MB else 'NOT met'} ({r['peak_rss_mb']:,} MB)")
            continue
        speed_ok = r["speedup_vs_peer"] != "" and r["speedup_vs_peer"] >= GOAL_SPEEDUP
        print(f"goal at {GOAL_SIZE} Mpx ({r['case']}): >= {GOAL_SPEEDUP:g}x faster: "
              f"{'met' if speed_ok else 'NOT met'} ({r['speedup_vs_peer'] or '-'}x); peak RSS <= {GOAL_RSS_MB} MB: "
              f"{'met' if r['peak_rss_mb'] <= GOAL_RSS_MB else 'NOT met'} ({r['peak_rss_mb']:,} MB); identical: "
              f"{r['identical'] or '-'}")
    print(f"appended to {RESULTS.relative_to(generate.ROOT)}; values and comparison in "
          f"{LAST_RUN.relative_to(generate.ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
