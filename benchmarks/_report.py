"""Turning the suite's results into a table, results.md, and target checks."""

from __future__ import annotations

from typing import Any

REF_COLUMNS = [
    ("ref.cp", "×cp"),
    ("ref.cp_sync", "×cp+sync"),
    ("ref.cp_al", "×cp -al"),
    ("ref.walkstat", "×walk+stat"),
    ("ref.readhash", "×read+hash"),
]

DATASET_TITLES = {"-": "start-up (whole processes, no data)"}

#: (dataset, artstore case, reference case or None, limit, what it says)
TARGETS = [
    ("a", "artstore.put_first_api", "ref.cp_sync", 1.3, "first put of 1 GiB within 1.3x of cp + sync"),
    ("a", "artstore.put_link_api", "ref.readhash", 2.0, "first put with the linking ingest within 2x of read + hash"),
    ("a", "artstore.put_unchanged_api", None, 0.1, "put again unchanged < 0.1 s via the API"),
    ("a", "artstore.put_unchanged_cli", None, 0.3, "put again unchanged < 0.3 s via the CLI"),
    ("b", "artstore.put_first_api", "ref.cp_sync", 1.5, "first put of 20k x 4 KiB within 1.5x of cp -r + sync"),
    ("b", "artstore.put_unchanged_api", "ref.walkstat", 5.0, "put again unchanged within 5x of walk + stat"),
    ("a", "artstore.get_copy", "ref.cp", 1.3, "get (copy) within 1.3x of cp"),
    ("b", "artstore.get_copy", "ref.cp", 1.3, "get (copy) within 1.3x of cp -r"),
    ("a", "artstore.get_hardlink", "ref.cp_al", 1.5, "get (hardlink) within 1.5x of cp -al"),
    ("b", "artstore.get_hardlink", "ref.cp_al", 1.5, "get (hardlink) within 1.5x of cp -al"),
]


def _find(rows: list[dict[str, Any]], ds: str, cid: str) -> dict[str, Any] | None:
    for r in rows:
        if r["dataset"] == ds and r["id"] == cid:
            return r
    return None


def evaluate_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for ds, cid, ref, limit, what in TARGETS:
        r = _find(rows, ds, cid)
        item: dict[str, Any] = dict(dataset=ds, case=cid, reference=ref, limit=limit, target=what)
        if r is None or r["median"] is None:
            item.update(status="not measured")
            out.append(item)
            continue
        if ref is None:
            item.update(value=r["median"], unit="s",
                        status="met" if r["median"] < limit else "missed")
        else:
            rr = _find(rows, ds, ref)
            if rr is None or not rr["median"]:
                item.update(status="not measured (no reference)")
                out.append(item)
                continue
            ratio = r["ratios"].get(ref) or r["median"] / rr["median"]  # paired per trial
            item.update(value=ratio, unit="x", artstore_s=r["median"], reference_s=rr["median"],
                        status="met" if ratio <= limit else "missed")
        out.append(item)
    return out


def _s(v: float | None) -> str:
    if v is None:
        return "-"
    if v < 0.01:
        return f"{v * 1000:.1f} ms"
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def _x(v: float | None) -> str:
    return "-" if v is None else (f"{v:.2f}" if v < 100 else f"{v:.0f}")


def _syncs(payload: dict[str, Any], r: dict[str, Any]) -> str:
    probe = payload.get("fsync_probe") or {}
    key = f"{r['dataset']}:{r['id']}"
    if key not in probe:
        return "-"
    counts = probe[key]
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


HEAD = ["case", "timed as", "median s", "whole proc s", "range s", "n", "peak RSS MiB",
        *[c for _, c in REF_COLUMNS], "sync calls"]


def _row(payload: dict[str, Any], r: dict[str, Any]) -> list[str]:
    if r["skipped"]:
        return [r["label"], "skipped", r["skipped"]] + [""] * (len(HEAD) - 3)
    if r["median"] is None:
        note = (r.get("failure") or "failed")[:160]
        return [r["label"], r["timing"], "FAILED", note] + [""] * (len(HEAD) - 4)
    rng = f"{_s(r['min'])}–{_s(r['max'])}" if r["n"] > 1 else ""
    return [r["label"], r["timing"], _s(r["median"]), _s(r["median_proc"]), rng, str(r["n"]),
            "-" if r["peak_rss_mib"] is None else f"{r['peak_rss_mib']:.0f}",
            *[_x(r["ratios"].get(ref)) for ref, _ in REF_COLUMNS], _syncs(payload, r)]


def _groups(payload: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    order: dict[str, list[dict[str, Any]]] = {}
    for r in payload["cases"]:
        order.setdefault(r["dataset"], []).append(r)
    out = []
    for ds in sorted(order, key=lambda d: (d != "-", d)):
        if ds == "-":
            title = DATASET_TITLES["-"]
        else:
            d = payload["meta"]["datasets"][ds]
            title = f"({ds}) {d['what']}: {d['files']} files, {d['bytes'] / 1024**2:.1f} MiB"
        out.append((title, order[ds]))
    return out


def render_table(payload: dict[str, Any]) -> str:
    lines = []
    for title, rows in _groups(payload):
        table = [HEAD] + [_row(payload, r) for r in rows]
        widths = [max(len(row[i]) for row in table if len(row) > i) for i in range(len(HEAD))]
        widths[0] = max(len(r[0]) for r in table)
        lines.append(title)
        for row in table:
            if len(row) > 2 and row[1] == "skipped":
                lines.append(f"  {row[0]:{widths[0]}}  skipped: {row[2]}")
                continue
            lines.append("  " + "  ".join(f"{c:{widths[i]}}" for i, c in enumerate(row)).rstrip())
        lines.append("")
    lines.append("targets:")
    for t in payload["targets"]:
        lines.append(f"  [{t['status']}] ({t['dataset']}) {t['target']}: {_target_value(t)}")
    return "\n".join(lines)


def _target_value(t: dict[str, Any]) -> str:
    if "value" not in t:
        return "-"
    if t["unit"] == "s":
        v = _s(t["value"])
        return v if v.endswith("ms") else f"{v} s"
    def sec(v: float) -> str:
        out = _s(v)
        return out if out.endswith("ms") else out + " s"

    return f"{t['value']:.2f}x (medians {sec(t['artstore_s'])} vs {sec(t['reference_s'])})"


def render_markdown(payload: dict[str, Any]) -> str:
    m = payload["meta"]
    out = [
        "# artstore benchmark results",
        "",
        f"Run {m['date']}, size `{m['size']}`, {m['trials']} trial(s) per case "
        f"({m['slow_trials']} for the slowest tools: DVC, git-annex, W&B, Oxen); "
        f"{m['seconds']} s in all. Machine: {m['machine']['cores']} cores, "
        f"{m['machine']['memory_gib']} GiB, {m['machine']['platform']}, Python "
        f"{m['machine']['python']}; working directory on {m['machine']['workdir_fs']}. "
        f"artstore {m['artstore'].get('version')} at commit {m['artstore'].get('commit')}"
        + (" plus uncommitted changes in artstore/." if m["artstore"].get("uncommitted_changes")
           else "."),
        "",
        f"- Page cache: {m['page_cache']}.",
        "- Every case runs as its own child process. *in-process* figures time the operation "
        "inside that process, after its imports (the API's cost); *whole process* figures "
        "include interpreter start and imports (what a command costs), and are given for "
        "every case in the `whole proc` column. Ratios (`×cp` ...) are the median over trials "
        "of the case's time over the reference's time in the same trial, on the same data "
        "(references: `cp`, `cp + sync`, `cp -al` whole process; walk + stat and read + hash "
        "in-process); results.json also has the ratios of the medians.",
        "- Peak RSS is GNU time's `%M` for each case's process (the largest of it and the "
        "processes it waited for; for the collaborative cases, the largest single writer).",
        "- Targets name the full-size data sets; at `tiny` and `small` they are checked on the "
        "smaller data and mean little.",
        "- The filesystem is synced before every timed case; each trial writes into fresh "
        "directories and trees of many files are only deleted when the run ends (on this "
        "machine, creating files right after deleting many is 8-15x slower).",
        "- The machine has 2 cores and other work may run beside the suite: figures are "
        "indicative; compare ratios taken in the same run.",
        "",
        "## Data",
        "",
    ]
    for ds, d in m["datasets"].items():
        extra = f", from {d['source']}" if d.get("source") else ""
        out.append(f"- ({ds}) {d['what']}: {d['files']} files, {d['bytes'] / 1024**2:.1f} MiB{extra}")
    out += ["", "## Results", ""]
    for title, rows in _groups(payload):
        out += [f"### {title}", "", "| " + " | ".join(HEAD) + " |",
                "|" + "---|" * len(HEAD)]
        for r in rows:
            cells = _row(payload, r)
            out.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
        notes = [f"- {r['label']}: {n}" for r in rows for n in r["notes"] if n]
        notes += [f"- {r['label']}: {r['failed']} trial(s) failed: {r['failure']}"
                  for r in rows if r.get("failed")]
        out += [""] + notes + ([""] if notes else [])
    out += ["## Targets", "", "| status | data | target | measured |", "|---|---|---|---|"]
    for t in payload["targets"]:
        out.append(f"| {t['status']} | ({t['dataset']}) | {t['target']} | {_target_value(t)} |")
    out += ["", "## Tools", ""]
    for tool, ver in m["tools"].items():
        why = m["unavailable"].get(tool)
        out.append(f"- {tool}: {ver or 'not available'}" + (f" ({why})" if why else ""))
    out += ["", "## Durability (who syncs)", "",
            "The `sync calls` column counts fsync/fdatasync/syncfs/sync/sync_file_range/msync "
            "calls of each case, measured once on tiny data under `strace -f -c` (where strace "
            "is installed). What the tools are expected to do:", ""]
    for tool, what in m["durability"].items():
        out.append(f"- {tool}: {what}")
    out.append("")
    return "\n".join(out)
