"""Run the standard benchmark matrix and write JSON lines plus a Markdown table.

    .venv/bin/python bench/matrix.py                      # 1, 3, 5 nodes; 5 s per cell
    .venv/bin/python bench/matrix.py --duration 2 --nodes 3 --readme

For each node count one local cluster (quorum, fsync on) is started and every
cell (workload x clients x pipeline) runs against it; keys are loaded once per
cluster. Results go to bench/results/matrix-STAMP.jsonl and .md, with a chart of
ops/s per cell (.png, also latest.png); ``--readme`` also puts the table into
docs/performance.md. ``--from FILE.jsonl`` draws the chart of an earlier run
again, without running anything.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from zkv import bench as zb

BEGIN, END = "<!-- bench-matrix:begin -->", "<!-- bench-matrix:end -->"


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def markdown(rows: list[dict], duration: float) -> str:
    m = zb.machine()
    lines = [(f"Machine: {m['nproc']} CPUs ({m['cpu']}), Python {m['python']}, loopback; "
              f"quorum, fsync on, 100-byte values, {rows[0]['options']['keys'] if rows else 0} "
              f"keys, {duration:g} s per cell, {time.strftime('%Y-%m-%d')}."),
             "",
             ("| nodes | workload | clients | pipeline | ops/s | p50 ms | p95 ms | p99 ms "
              "| max ms | errors | generator cores |"),
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        o, t = r["options"], r["total"]
        lines.append(f"| {o['nodes']} | {o['workload']} | {o['clients']} | {o['pipeline']} "
                     f"| {t['ops_per_s']:,.0f} | {t['p50_ms']:.2f} | {t['p95_ms']:.2f} "
                     f"| {t['p99_ms']:.2f} | {t['max_ms']:.1f} | {t['errors']} "
                     f"| {r['generator']['cores_used']:.2f} |")
    return "\n".join(lines) + "\n"


def chart(rows: list[dict], path: Path) -> Path:
    """The chart of ops/s per cell, one bar per node count (matplotlib, loaded here)."""
    from zkv import plots

    m = rows[0].get("machine") if rows else None
    m = m or zb.machine()
    title = (f"zkv bench matrix: ops/s per cell (quorum, fsync on; {m['nproc']} CPUs, "
             f"{rows[0]['options']['duration']:g} s per cell)" if rows else "")
    return plots.save(plots.matrix_figure(rows, title), path)


def update_readme(table: str) -> None:
    readme = ROOT / "docs" / "performance.md"
    text = readme.read_text()
    block = f"{BEGIN}\n{table}{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + ("\n\n## Performance\n\nThe latest `bench/matrix.py` run "
                                    "(`zkv bench` cells; see bench/results/):\n\n"
                                    f"{block}\n")
    readme.write_text(text)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", default="1,3,5")
    p.add_argument("--workloads", default="put,get,mixed")
    p.add_argument("--clients", default="1,8,32")
    p.add_argument("--pipelines", default="1,32")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per cell")
    p.add_argument("--keys", type=int, default=10_000)
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--timeout", type=float, default=5.0, help="per-operation timeout")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--readme", action="store_true", help="put the table into docs/performance.md")
    p.add_argument("--from", dest="source", type=Path, metavar="JSONL",
                   help="only draw the chart of an earlier run's JSON lines (FILE.png)")
    args = p.parse_args()
    if args.source is not None:
        rows = [json.loads(line) for line in args.source.read_text().splitlines() if line]
        print(f"wrote {chart(rows, args.source.with_suffix('.png'))}")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    jsonl = args.out / f"matrix-{stamp}.jsonl"
    rows: list[dict] = []
    for nodes in ints(args.nodes):
        cluster = zb.LocalCluster(nodes)
        loaded = False
        try:
            for workload in args.workloads.split(","):
                for clients in ints(args.clients):
                    for pipeline in ints(args.pipelines):
                        options = zb.BenchOptions(
                            workload=workload, clients=clients, duration=args.duration,
                            keys=args.keys, value_size=args.value_size, pipeline=pipeline,
                            timeout=args.timeout, seeds=cluster.seeds,
                            preload=not loaded and workload in ("get", "mixed"))
                        loaded = loaded or options.preload
                        try:
                            result = zb.run(options)
                        except zb.BenchError as exc:
                            print(f"{nodes} nodes {workload} c{clients} p{pipeline}: {exc}",
                                  file=sys.stderr)
                            continue
                        result["options"]["nodes"] = nodes
                        rows.append(result)
                        with open(jsonl, "a") as f:
                            f.write(json.dumps(result) + "\n")
                        t = result["total"]
                        print(f"{nodes} nodes {workload:5} c{clients:<3} p{pipeline:<3} "
                              f"{t['ops_per_s']:>9,.0f} ops/s  p50 {t['p50_ms']:.2f} ms  "
                              f"p99 {t['p99_ms']:.2f} ms  errors {t['errors']}", flush=True)
        finally:
            cluster.stop()
    table = markdown(rows, args.duration)
    md = jsonl.with_suffix(".md")
    md.write_text(table)
    (args.out / "latest.md").write_text(table)
    png = chart(rows, jsonl.with_suffix(".png"))
    (args.out / "latest.png").write_bytes(png.read_bytes())
    if args.readme:
        update_readme(table)
    print(f"\n{table}\nwrote {jsonl}, {md} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
