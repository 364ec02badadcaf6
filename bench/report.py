"""What a run tells: the issue's targets checked, a short table, the JSON file and the plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.stats import ratio


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}".rstrip("0").rstrip(".")
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return f"{text}{unit}"


def targets(modes: dict[str, Any]) -> list[dict[str, Any]]:
    """The figures the issue asks for, each with its target and whether it was met."""
    out: list[dict[str, Any]] = []

    def add(name: str, value: Any, target: str, met: bool | None, unit: str = "") -> None:
        out.append({"figure": name, "value": value, "unit": unit, "target": target, "met": met})

    def oc(mode: str) -> Any:
        return _get(modes, mode, "onionchat")

    def os_(mode: str) -> Any:
        return _get(modes, mode, "onionshare")

    fixed = oc("fixed")
    if fixed:
        p99 = _get(fixed, "result", "latency_ms", "p99")
        o = fixed.get("settings", {})
        name = f"fixed {o.get('clients')}×{o.get('senders')}×{o.get('rate', 0):g}/s: p99"
        add(name, p99, "≤ 5 ms", p99 is not None and p99 <= 5, " ms")
        change = _get(fixed, "one_stalled", "p99_change_pct")
        if change is not None:
            add(
                "one client stops reading: others' p99 change",
                change,
                "≤ +10 %",
                change <= 10,  # a drop is noise, not harm
                " %",
            )
            dropped = _get(fixed, "one_stalled", "dropped")
            add("the stalled client is dropped", dropped, "yes", bool(dropped))
    sat = oc("saturate")
    if sat:
        best = sat.get("highest_passed_deliveries_per_s")
        other = _get(os_("saturate"), "saturation_deliveries_per_s")
        r = ratio(best, other)
        bound = (
            " (generator-limited: a lower bound)" if sat.get("generator_limited_at_best") else ""
        )
        add(
            f"saturate {_get(sat, 'settings', 'clients')} clients: deliveries/s with p99 ≤ "
            f"{_get(sat, 'settings', 'p99_limit_ms'):g} ms{bound}",
            best,
            "≥ 2 × OnionShare's saturation" + (f" ({2 * other:,.0f})" if other else ""),
            (r >= 2) if r is not None else None,
            "/s",
        )
    idle = oc("idle")
    if idle:
        kib = _get(idle, "memory", "per_connection_kib")
        conns = _get(idle, "memory", "connections")
        add(
            f"idle: node memory per connection ({_fmt(conns)} connections)",
            kib,
            "≤ 32 KiB",
            kib is not None and kib <= 32,
            " KiB",
        )
        secs = _get(idle, "join", "seconds")
        n = _get(idle, "join", "clients")
        failed = _get(idle, "join", "failed") or 0
        if failed:
            add(f"{_fmt(n)} clients join one room: failed (see errors)", failed, "0", False)
        else:
            add(
                f"{_fmt(n)} clients join one room",
                secs,
                "≤ 2 s",
                secs is not None and secs <= 2,
                " s",
            )
        exp = idle.get("traffic_exponent")
        add(
            "join traffic: exponent of total bytes in N (2 = linear per join)",
            exp,
            "≈ 2",
            (exp <= 2.3) if exp is not None else None,
        )
    ing = oc("ingest")
    if ing:
        rate = ing.get("acked_per_s")
        stored = _get(ing, "stored", "ok")
        add(
            "ingest: acknowledged, persisted msgs/s",
            rate,
            "≥ 5,000/s, all stored",
            rate is not None and rate >= 5000 and stored is not False,
            "/s",
        )
    hist = oc("history")
    if hist and "join" in hist:
        m = _get(hist, "settings", "messages") or 0
        big = f"{m / 1e6:g}M" if m >= 1e6 else f"{m:,}"
        j = _get(hist, "join", "at_node_ms", "p99")
        h = _get(hist, "history_before", "at_node_ms", "p99")
        add(
            f"history {big}: join → joined (newest 50), p99 at node",
            j,
            "≤ 5 ms",
            j is not None and j <= 5,
            " ms",
        )
        add(
            f"history {big}: history before=id, p99 at node",
            h,
            "≤ 5 ms",
            h is not None and h <= 5,
            " ms",
        )
    botr = oc("bot")
    if botr and "token_latency_ms" in botr:
        o = botr.get("settings", {})
        head = f"bot, {o.get('clients')} clients, {o.get('rate', 0):g} tokens/s"
        # the issue asks for these figures, not for a bound: no target, nothing met
        for key in ("p50", "p99"):
            add(
                f"{head}: model token → client, {key}",
                _get(botr, "token_latency_ms", key),
                "",
                None,
                " ms",
            )
        add(f"{head}: first token, p50", _get(botr, "first_token_ms", "p50"), "", None, " ms")
        add(f"{head}: first token, p99", _get(botr, "first_token_ms", "p99"), "", None, " ms")
        add(
            f"{head}: last token → final message, p99",
            _get(botr, "final_message_ms", "p99"),
            "",
            None,
            " ms",
        )
        add(
            f"{head}: delta frames per answer ({o.get('tokens')} tokens)",
            _get(botr, "deltas_per_answer", "mean"),
            "",
            None,
        )
    hostile = oc("hostile")
    if hostile and hostile.get("steps"):
        o = hostile.get("settings", {})
        margin = o.get("p99_margin_pct", 10)
        limit = o.get("rss_limit_mib", 300)
        for s in hostile["steps"]:
            label = f"hostile {s['step']} {s['name']}"
            if s["step"] > 1:
                ratio_ = _get(s, "honest", "p99_ratio")
                change = round((ratio_ - 1) * 100, 1) if ratio_ is not None else None
                add(
                    f"{label}: honest p99 vs baseline",
                    change,
                    f"≤ +{margin:g} %",
                    s["p99_ok"],
                    " %",
                )
            add(
                f"{label}: node peak RSS in the step",
                _get(s, "node", "rss_peak_mib"),
                f"< {limit:g} MiB",
                s["rss_ok"],
                " MiB",
            )
        for kind, a in (hostile.get("attacks") or {}).items():
            median = a.get("p99_ratio_median")
            rounds = len(a.get("p99_ratios", []))
            add(
                f"hostile {kind}, median of {rounds} round(s): honest p99 vs baseline",
                round((median - 1) * 100, 1) if median is not None else None,
                f"≤ +{margin:g} %",
                a["passed"],
                " %",
            )
    fed = oc("federation")
    if fed and fed.get("fixed"):
        p99 = _get(fed, "fixed", "across_to_b", "latency_ms", "p99")
        within = _get(fed, "fixed", "within_a", "latency_ms", "p99")
        add(
            "federation: p99 across nodes at the fixed load",
            p99,
            "< 50 ms",
            p99 is not None and p99 < 50,
            " ms",
        )
        add("federation: p99 within one node, same step", within, "", None, " ms")
        ceiling = _get(fed, "broker_ceiling", "msgs_per_s")
        best = fed.get("federated_msgs_per_s")
        add("federation: broker QoS 1 ceiling (minimal pub/sub)", ceiling, "", None, " msgs/s")
        ratio_ = fed.get("throughput_ratio_to_ceiling")
        add(
            "federation: throughput 2 nodes × 2 brokers, ratio to the ceiling",
            ratio_,
            "≥ 0.5",
            ratio_ is not None and ratio_ >= 0.5,
        )
        add("federation: throughput 2 nodes × 2 brokers", best, "", None, " msgs/s")
        packed = fed.get("messages_per_publish_at_best")
        add("federation: messages per publish at that rate (node A)", packed, "", None)
        killed = fed.get("broker_killed")
        if killed:
            across = killed["across_to_b"]
            kp99 = across["latency_ms"]["p99"]
            add(
                "federation: broker SIGKILLed under load: lost + shown twice",
                across["lost"] + across["duplicated"],
                "0",
                across["lost"] + across["duplicated"] == 0,
            )
            add(
                "federation: broker SIGKILLed under load: p99 across",
                kp99,
                "< 1000 ms",
                kp99 is not None and kp99 < 1000,
                " ms",
            )
    return out


def hostile_lines(data: dict[str, Any]) -> list[str]:
    """The hostile steps, one line each, and what the attackers got done."""
    lines = [
        f"  {'step':<12} {'p50':>8} {'p99':>8} {'×base':>6} {'lost':>5} {'dup':>4} "
        f"{'closed':>6} {'errors':>6} {'RSS MiB':>8} {'CPU s':>6} {'others%':>7}  result",
    ]
    notes = []
    for s in data.get("steps", []):
        h, nd = s["honest"], s["node"]
        lat = h["latency_ms"]
        mark = "PASS" if s["passed"] else "FAIL"
        why = [w for w, ok in (("p99", s["p99_ok"]), ("RSS", s["rss_ok"])) if not ok]
        mark += " " + "/".join(why) if why else ""
        mark += "" if s["honest_ok"] else " (honest harmed)"
        mark += " (noisy)" if nd.get("noisy") else ""
        others = _fmt(nd.get("others_cpu_pct_during_step"))
        lines.append(
            f"  {s['step']} {s['name']:<10} {_fmt(lat['p50']):>8} {_fmt(lat['p99']):>8} "
            f"{_fmt(h['p99_ratio']):>6} {h['lost']:>5} {h['duplicated']:>4} "
            f"{h['closed_clients']:>6} {h['error_frames']:>6} {_fmt(nd['rss_peak_mib']):>8} "
            f"{_fmt(nd['cpu_s']):>6} {others:>7}  {mark}"
        )
        if "attackers" in s:
            notes.append(f"  {s['name']}: {s['attackers']['summary']}")
        if h.get("logins") is not None:
            got = ", ".join(f"{x['first_status']} in {x['first_seconds']} s" for x in h["logins"])
            notes.append(
                f"  honest logins during the spray: {h['logins_ok_first_try']} of "
                f"{len(h['logins'])} at the first try ({got})"
            )
    notes.append(
        "  others%: CPU of other processes on the machine during the step (% of a core; noisy: "
        "over 50 %); the baseline run again at the end shows the noise"
    )
    if data.get("stopped_early"):
        notes.append(f"  stopped early: {data['stopped_early'].splitlines()[0]}")
    return lines + notes


def _met(check: dict[str, Any], no: str) -> str:
    """yes / no / ? against the target; nothing for a figure without one."""
    if not check["target"]:
        return ""
    return {True: "yes", False: no, None: "?"}[check["met"]]


def comparison(modes: dict[str, Any]) -> list[dict[str, Any]]:
    """OnionChat beside OnionShare, figure by figure, with the ratio."""
    rows: list[dict[str, Any]] = []

    def row(name: str, path: tuple[str, ...], mode: str, better: str) -> None:
        a = _get(modes, mode, "onionchat", *path)
        b = _get(modes, mode, "onionshare", *path)
        if a is None or b is None:
            return
        rows.append(
            {
                "figure": name,
                "onionchat": a,
                "onionshare": b,
                "ratio": ratio(a, b),
                "better": better,
            }
        )

    row("fixed: p50 ms", ("result", "latency_ms", "p50"), "fixed", "lower")
    row("fixed: p99 ms", ("result", "latency_ms", "p99"), "fixed", "lower")
    row("fixed: node CPU %", ("result", "node_cpu_pct"), "fixed", "lower")
    row(
        "fixed, one stalled: p99 ms",
        ("one_stalled", "result", "latency_ms", "p99"),
        "fixed",
        "lower",
    )
    row(
        "saturate: deliveries/s, p99 ≤ 100 ms",
        ("highest_passed_deliveries_per_s",),
        "saturate",
        "higher",
    )
    row("saturate: saturation deliveries/s", ("saturation_deliveries_per_s",), "saturate", "higher")
    row("idle: KiB per connection", ("memory", "per_connection_kib"), "idle", "lower")
    row("idle: seconds for N to join", ("join", "seconds"), "idle", "lower")
    row("idle: bytes per join", ("join", "bytes_per_join"), "idle", "lower")
    row("idle: exponent of join traffic in N", ("traffic_exponent",), "idle", "lower")
    sat_a = _get(modes, "saturate", "onionchat", "highest_passed_deliveries_per_s")
    sat_b = _get(modes, "saturate", "onionshare", "saturation_deliveries_per_s")
    if sat_a is not None and sat_b is not None:
        rows.append(
            {
                "figure": "OnionChat (p99 ≤ 100 ms) ÷ OnionShare saturation",
                "onionchat": sat_a,
                "onionshare": sat_b,
                "ratio": ratio(sat_a, sat_b),
                "better": "higher",
            }
        )
    return rows


def table(results: dict[str, Any]) -> str:
    lines = []
    checks = results.get("targets") or []
    if checks:
        w = max(len(c["figure"]) for c in checks)
        lines.append(f"{'figure':<{w}}  {'value':>14}  {'target':<30} met")
        for c in checks:
            met = _met(c, "NO")
            value = _fmt(c["value"], c["unit"])
            lines.append(f"{c['figure']:<{w}}  {value:>14}  {c['target']:<30} {met}")
    comp = results.get("comparison") or []
    if comp:
        w = max(len(c["figure"]) for c in comp)
        lines.append("")
        lines.append(f"{'vs OnionShare 2.7':<{w}}  {'OnionChat':>12}  {'OnionShare':>12}  ratio")
        for c in comp:
            lines.append(
                f"{c['figure']:<{w}}  {_fmt(c['onionchat']):>12}  {_fmt(c['onionshare']):>12}"
                f"  {_fmt(c['ratio'])}"
            )
    sat = _get(results, "modes", "saturate")
    if sat:
        lines.append("")
        lines.append("saturate steps (offered → achieved deliveries/s, p50/p99 ms):")
        for target, data in sat.items():
            for s in data.get("steps", []):
                lat = s["latency_ms"]
                mark = "pass" if s.get("passed") else "fail"
                gen = " gen-limited" if s["generator_limited"] else ""
                lines.append(
                    f"  {target:<10} {s['offered_deliveries_per_s']:>9,} → "
                    f"{s['achieved_deliveries_per_s']:>9,}  {_fmt(lat['p50']):>7}/"
                    f"{_fmt(lat['p99']):<7} lost {s['lost']:<6} node {s['node_cpu_pct']:>5}% "
                    f"gen {s['generator_cpu_pct']:>5}% {mark}{gen}"
                )
    hostile = _get(results, "modes", "hostile", "onionchat")
    if hostile and hostile.get("steps"):
        lines.append("")
        lines.append("hostile steps (honest latency ms, node peak RSS in the step, node CPU s):")
        lines += hostile_lines(hostile)
    return "\n".join(lines)


def markdown(results: dict[str, Any]) -> str:
    """The tables again, as Markdown (for the README's performance section)."""
    m = results.get("machine", {})
    out = [
        f"Run of {results.get('date', '?')} on {m.get('label', '?')}: {m.get('cores')} cores "
        f"({m.get('cpu_model')}), {m.get('memory_gib')} GiB, Python {m.get('python')}.",
        "",
        "| figure | value | target | met |",
        "| --- | ---: | --- | --- |",
    ]
    for c in results.get("targets") or []:
        met = _met(c, "**no**")
        out.append(f"| {c['figure']} | {_fmt(c['value'], c['unit'])} | {c['target']} | {met} |")
    comp = results.get("comparison") or []
    if comp:
        out += [
            "",
            "| vs OnionShare 2.7 | OnionChat | OnionShare | ratio |",
            "| --- | ---: | ---: | ---: |",
        ]
        for c in comp:
            out.append(
                f"| {c['figure']} | {_fmt(c['onionchat'])} | {_fmt(c['onionshare'])} | "
                f"{_fmt(c['ratio'])} |"
            )
    hostile = _get(results, "modes", "hostile", "onionchat")
    if hostile and hostile.get("steps"):
        out += [
            "",
            "| hostile step | p50 ms | p99 ms | p99 × baseline | lost | dup | honest closed "
            "| error frames | node RSS peak MiB | node CPU s | others' CPU % | stolen % "
            "| result | attackers |",
            "| --- " + "| ---: " * 11 + "| --- | --- |",
        ]
        for s in hostile["steps"]:
            h, nd = s["honest"], s["node"]
            lat = h["latency_ms"]
            mark = "PASS" if s["passed"] else "**FAIL**"
            mark += " (noisy)" if nd.get("noisy") else ""
            others = _fmt(nd.get("others_cpu_pct_during_step"))
            stolen = _fmt(nd.get("stolen_pct_during_step"))
            out.append(
                f"| {s['step']} {s['name']} | {_fmt(lat['p50'])} | {_fmt(lat['p99'])} | "
                f"{_fmt(h['p99_ratio'])} | {h['lost']} | {h['duplicated']} | "
                f"{h['closed_clients']} | {h['error_frames']} | {_fmt(nd['rss_peak_mib'])} | "
                f"{_fmt(nd['cpu_s'])} | {others} | {stolen} | {mark} | "
                f"{_get(s, 'attackers', 'summary') or '—'} |"
            )
    return "\n".join(out) + "\n"


def plot(results: dict[str, Any], path: Path) -> bool:
    """Latency (p50, p99) against offered load, from the saturate steps; False if none."""
    sat = _get(results, "modes", "saturate")
    if not sat:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    colours = {"onionchat": "tab:purple", "onionshare": "tab:orange"}
    drawn = False
    for target, data in sat.items():
        last: dict[int, dict[str, Any]] = {}  # per offered level, its last attempt
        for s in data.get("steps", []):
            if s["latency_ms"]["p99"] is not None:
                last[s["offered_deliveries_per_s"]] = s
        steps = [last[k] for k in sorted(last)]
        if not steps:
            continue
        x = [s["offered_deliveries_per_s"] / 1000 for s in steps]
        colour = colours.get(target)
        for key, style in (("p50", ":"), ("p99", "-")):
            y = [max(s["latency_ms"][key], 0.01) for s in steps]
            ax.plot(x, y, style, marker="o", color=colour, label=f"{target} {key}")
        limited = [s for s in steps if s["generator_limited"]]
        if limited:
            ax.scatter(
                [s["offered_deliveries_per_s"] / 1000 for s in limited],
                [s["latency_ms"]["p99"] for s in limited],
                marker="x",
                s=80,
                color="black",
                zorder=3,
            )
        drawn = True
    if not drawn:
        plt.close(fig)
        return False
    ax.axhline(100, color="grey", linewidth=0.8, linestyle="--")
    ax.text(ax.get_xlim()[0], 105, " p99 limit 100 ms", color="grey", fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("offered load (thousand deliveries/s, 200 clients in one room)")
    ax.set_ylabel("send → receive latency (ms)")
    m = results.get("machine", {})
    ax.set_title(f"Latency against load — {m.get('cores')} cores, {m.get('cpu_model')}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, title="× = generator-limited step", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def write(results: dict[str, Any], out_dir: Path, stem: str) -> list[Path]:
    """results → STEM.json, STEM.md and (with saturate steps) STEM-latency.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    path = out_dir / f"{stem}.json"
    path.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    written.append(path)
    md = out_dir / f"{stem}.md"
    md.write_text(markdown(results))
    written.append(md)
    png = out_dir / f"{stem}-latency.png"
    if plot(results, png):
        written.append(png)
    return written
