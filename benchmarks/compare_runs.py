"""Compare two stored bench runs of the same methods on the cases both finished (nothing runs again).

For each method present in both results roots, the mean of every metric over the shared cases in run A and in
run B, and the paired difference A − B with its standard error (``*`` when it is beyond two standard errors,
the bench's rule). Use it to see what a setting changes, e.g. ASSD at 200 against 30 iterations, or whether
today's code reproduces a stored run. With ``--against M``, every method of run A is paired with method ``M`` of
run B instead (one method against another across two runs, e.g. each ASSD rung against Video-P2P).

    python benchmarks/compare_runs.py A/shapeworld-v2 B/shapeworld-v2 --name full_vs_reduced --out DIR

Writes ``<name>.json`` and ``<name>.md`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from videodirector.bench.runner import paired_comparison

METRICS = ("gt_psnr", "background_psnr", "preserved_psnr", "edit_accuracy", "trajectory_error_px", "flicker",
           "reconstruction_psnr")


def load(root: Path, method: str) -> dict[str, dict]:
    """Per-case results of ``method`` under ``root/cases``, by case id."""
    return {f.stem: json.loads(f.read_text()) for f in sorted((root / "cases" / method).glob("*.json"))}


def compare(a: Path, b: Path, methods: list[str] | None = None, against: str | None = None) -> dict[str, dict]:
    """``{method: {"n": cases, metric: {"a", "b", "diff", "se", "beyond_2se"}}}`` over the shared cases; run B's
    method is the same one, or ``against``."""
    names = methods or sorted(p.name for p in (a / "cases").iterdir()
                              if against or (b / "cases" / p.name).is_dir())
    out: dict[str, dict] = {}
    for m in names:
        ra, rb = load(a, m), load(b, against or m)
        shared = sorted(set(ra) & set(rb))
        if not shared:
            continue
        per_case = {"B": [{**rb[c], "case": c} for c in shared], "A": [{**ra[c], "case": c} for c in shared]}
        paired = paired_comparison(per_case, reference="B", metrics=METRICS)["A"]  # the bench's 2-SE rule
        row: dict = {"n": len(shared), "cases": shared}
        for k, v in paired.items():
            row[k] = {"a": sum(ra[c][k] for c in shared) / len(shared), "b": sum(rb[c][k] for c in shared) / len(shared),
                      "diff": v["mean_diff"], "se": v["se"], "beyond_2se": v["better"] or v["worse"]}
        out[m] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path, help="results root of run A (the folder holding cases/)")
    ap.add_argument("b", type=Path, help="results root of run B")
    ap.add_argument("--methods", default=None, help="comma-separated (default: every method both runs hold)")
    ap.add_argument("--against", default=None, help="pair every method of A with this method of B")
    ap.add_argument("--name", default="compare_runs")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    res = compare(args.a, args.b, args.methods.split(",") if args.methods else None, args.against)
    vs = f" (each against B's `{args.against}`)" if args.against else ""
    lines = [f"# {args.name}", "", f"A = `{args.a}`, B = `{args.b}`{vs}; means over the cases both finished, "
             "Δ = A − B ± SE (paired; * beyond two standard errors).", "",
             "| method | n | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
    for m, row in res.items():
        cells = []
        for k in METRICS:
            v = row.get(k)
            cells.append("—" if v is None else
                         f"{v['a']:.2f} vs {v['b']:.2f} (Δ {v['diff']:+.2f} ± {v['se']:.2f}{'*' if v['beyond_2se'] else ''})")
        lines.append(f"| {m} | {row['n']} | " + " | ".join(cells) + " |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(res, indent=2) + "\n")
    (args.out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
