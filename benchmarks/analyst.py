"""Analyst benchmark: every site of what was asked, an honest "not found", and counts, on mosaic scenes.

Scenes (:func:`rsrag.tools.mosaic.build_scene_set`, cached under ``--out``): ``--scenes`` georeferenced,
tiled GeoTIFFs of ``--side`` x ``--side`` AID chips (150 px) from the encoder's validation split only; four
land-cover quadrants; two present target classes with 2-4 sites each (one chip or 2 x 2 chips); two absent
target classes; the targets rotate through every class of the folder (30 for AID).

Questions, per scene and target class (present and absent), each in a fresh thread: "where are the X?",
"are there any X?" and "how many X are there?", X a natural phrase for the class, or (for every third
question) a synonym that avoids the class name (``PHRASES``).

Systems, on the same scenes in the same run:

* product: the analyst agent with the rule policy through :class:`rsrag.agent.interfaces.api.Analyst`,
  default settings (encoder, tiling, top-k, thresholds) except the store/session/crop folders under
  ``--out``. It reads ``answer.finding`` and the cited region evidence.
* baseline: the flat top-k answer as rsrag gave it before sites and presence calibration: the fast path over
  a flat ``vit:448`` index, top 5 windows (overlapping ones merged), the best 3 of the confident ones (else of
  all 5) cited, "found" whenever one is confident (the previous rule policy's rule).

Metrics (per system):

* site recall: over present classes' "where" questions, the share of true sites that a cited region covers
  by at least half (intersection >= 0.5 of the site's area);
* precision: cited regions (cited as found) that lie on a true site of the asked class (intersection >= 0.5
  of the smaller of region and site), over all "where" questions, present and absent;
* found rate on present classes, not-found-or-uncertain rate on absent classes (all three question kinds);
* AUROC of the presence confidence (best cited presence; baseline: best within-scene confidence) between
  present and absent classes;
* count error: mean |count - true sites| on "how many" questions (count: cited sites when found, else 0);
* a per-class table.

Run:  .venv/bin/python benchmarks/analyst.py [--scenes 20] [--side 16] [--seed 0] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rsrag.tools.calibration import auroc  # noqa: E402
from rsrag.tools.captioned import class_phrase  # noqa: E402
from rsrag.tools.mosaic import AnalystScene, build_scene_set  # noqa: E402
from rsrag.tools.region import PixelBox  # noqa: E402

#: Natural phrase (plural) and a synonym avoiding the class name, per AID class.
PHRASES: dict[str, tuple[str, str]] = {
    "Airport": ("airports", "airfields with runways"),
    "BareLand": ("bare land", "barren ground"),
    "BaseballField": ("baseball fields", "baseball diamonds"),
    "Beach": ("beaches", "sandy shores"),
    "Bridge": ("bridges", "spans over water"),
    "Center": ("city centres", "downtown districts"),
    "Church": ("churches", "cathedrals"),
    "Commercial": ("commercial areas", "shopping districts"),
    "DenseResidential": ("dense residential areas", "tightly packed houses"),
    "Desert": ("deserts", "sand dunes"),
    "Farmland": ("farmland", "crop fields"),
    "Forest": ("forests", "woods"),
    "Industrial": ("industrial areas", "factories"),
    "Meadow": ("meadows", "grassland"),
    "MediumResidential": ("medium residential areas", "suburban houses"),
    "Mountain": ("mountains", "rocky peaks"),
    "Park": ("parks", "public gardens"),
    "Parking": ("parking lots", "parked cars"),
    "Playground": ("playgrounds", "running tracks"),
    "Pond": ("ponds", "small lakes"),
    "Port": ("ports", "harbours with docked ships"),
    "RailwayStation": ("railway stations", "train stations"),
    "Resort": ("resorts", "holiday villas with pools"),
    "River": ("rivers", "streams"),
    "School": ("schools", "school buildings"),
    "SparseResidential": ("sparse residential areas", "scattered houses"),
    "Square": ("squares", "public plazas"),
    "Stadium": ("stadiums", "sports arenas"),
    "StorageTanks": ("storage tanks", "oil tanks"),
    "Viaduct": ("viaducts", "elevated highways"),
}
KINDS = ("where", "is_there", "how_many")
BASELINE_TILING = "vit:448"
BASELINE_TOP_K = 5
BASELINE_CITED = 3
CELL = 150


def phrase_for(label: str, use_synonym: bool) -> str:
    natural, synonym = PHRASES.get(label, (class_phrase(label), class_phrase(label)))
    return synonym if use_synonym else natural


def question(kind: str, phrase: str) -> str:
    return {"where": f"where are the {phrase}?", "is_there": f"are there any {phrase}?",
            "how_many": f"how many {phrase} are there?"}[kind]


def covers_site(region: PixelBox, site: PixelBox) -> bool:
    """A cited region covers a site when it holds at least half of the site's area."""
    return region.intersection(site) >= 0.5 * site.area


def on_site(region: PixelBox, sites: tuple[PixelBox, ...]) -> bool:
    """A cited region lies on a site when they share at least half of the smaller of the two."""
    return any(region.intersection(s) >= 0.5 * min(region.area, s.area) for s in sites)


def score_answer(regions: list[PixelBox], found: bool, presence: float, sites: tuple[PixelBox, ...]) -> dict[str, Any]:
    """What one answer got right: covered sites, cited regions on a site, found, the count it implies."""
    confirmed = regions if found else []
    hit = [any(covers_site(r, s) for r in confirmed) for s in sites]
    small = [s.width <= CELL for s in sites]  # one-chip sites (the others are 2 x 2 chips)
    return {
        "found": found, "presence": presence, "count": len(confirmed) if found else 0,
        "covered": sum(hit), "sites": len(sites),
        "covered_1chip": sum(h for h, sm in zip(hit, small) if sm), "sites_1chip": sum(small),
        "cited": len(confirmed), "on_site": sum(on_site(r, sites) for r in confirmed),
    }


def product_answer(analyst: Any, scene: AnalystScene, text: str, truth_sites: tuple[PixelBox, ...]) -> dict[str, Any]:
    t0 = time.perf_counter()
    answer = analyst.ask(scene.path, text)
    seconds = time.perf_counter() - t0
    regions, presences = [], []
    by_region: dict[tuple[int, int, int, int], float] = {}
    for ev in answer.evidence:
        if ev.kind != "region" or ev.region is None or ev.path not in ("fast", "slow", "similar"):
            continue  # zoom crops repeat a cited site
        box = ev.region.box
        if box.as_tuple() not in by_region:
            by_region[box.as_tuple()] = float("nan")
            regions.append(box)
        if getattr(ev, "presence", None) is not None:
            presences.append(float(ev.presence))
            by_region[box.as_tuple()] = float(ev.presence)
    finding = getattr(answer, "finding", None)
    found = finding == "found"
    presence = max(presences) if presences else (0.0 if finding is not None else float(answer.confidence))
    row = score_answer(regions, found, presence, truth_sites)
    row.update(finding=finding, seconds=seconds, steps=answer.steps, supported=answer.supported,
               text=answer.text[:300],
               regions=[[*r.as_tuple(), by_region[r.as_tuple()], on_site(r, truth_sites)] for r in regions])
    return row


def baseline_answer(ws: Any, info: Any, phrase_text: str, truth_sites: tuple[PixelBox, ...],
                    threshold: float) -> dict[str, Any]:
    from rsrag.tools.fastpath import extract_key_phrases, fast_search

    t0 = time.perf_counter()
    res = fast_search(info, ws.encoder, phrases=extract_key_phrases(phrase_text), store=ws.patches,
                      top_k=BASELINE_TOP_K, threshold=threshold)
    hits = list(res.hits)[:BASELINE_TOP_K]
    confident = [h for h in hits if h.confidence >= threshold]
    cited = (confident or hits)[:BASELINE_CITED]
    # the previous policy cited the top regions in every answer and reported them as found when confident;
    # its count was the number of confident regions listed
    row = score_answer([h.region.box for h in cited], bool(confident),
                       max((h.confidence for h in hits), default=0.0), truth_sites)
    row["count"] = len(confident)
    row["seconds"] = time.perf_counter() - t0
    return row


def prefill(ws: Any, path: Path) -> None:
    """Fill the product's index of a scene completely (a pyramid: every level), so that questions time the
    search and not the first encoding of windows."""
    from rsrag.tools.raster import open_scene

    if ws.uses_pyramid:
        from rsrag.tools.pyramid import build_index

        build_index(open_scene(path), ws.encoder, ws.tiling, ws.patches)
    else:
        ws.index(ws.scene(path))


def summarise(rows: list[dict[str, Any]], system: str) -> dict[str, Any]:
    mine = [r for r in rows if r["system"] == system]
    where_present = [r for r in mine if r["kind"] == "where" and r["present"]]
    where_all = [r for r in mine if r["kind"] == "where"]
    present = [r for r in mine if r["present"]]
    absent = [r for r in mine if not r["present"]]
    counts = [r for r in mine if r["kind"] == "how_many"]
    cited = sum(r["cited"] for r in where_all)
    ratio = lambda a, b: round(a / b, 4) if b else float("nan")  # noqa: E731
    return {
        "site_recall": ratio(sum(r["covered"] for r in where_present), sum(r["sites"] for r in where_present)),
        "site_recall_1chip": ratio(sum(r["covered_1chip"] for r in where_present),
                                   sum(r["sites_1chip"] for r in where_present)),
        "site_recall_2x2": ratio(sum(r["covered"] - r["covered_1chip"] for r in where_present),
                                 sum(r["sites"] - r["sites_1chip"] for r in where_present)),
        "precision": ratio(sum(r["on_site"] for r in where_all), cited),
        "precision_present_only": ratio(sum(r["on_site"] for r in where_present), sum(r["cited"] for r in where_present)),
        "present_found": ratio(sum(r["found"] for r in present), len(present)),
        "present_found_synonyms": ratio(sum(r["found"] for r in present if r["synonym"]),
                                        sum(r["synonym"] for r in present)),
        "absent_not_found_or_uncertain": ratio(sum(not r["found"] for r in absent), len(absent)),
        "absent_not_found": ratio(sum(r.get("finding") == "not_found" for r in absent), len(absent))
        if system == "product" else None,
        "auroc": round(auroc([r["presence"] for r in mine], [r["present"] for r in mine]), 4),
        "count_mae": round(statistics.fmean(abs(r["count"] - r["sites"]) for r in counts), 3) if counts else None,
        "count_exact": ratio(sum(r["count"] == r["sites"] for r in counts), len(counts)),
        "questions": len(mine),
        "seconds_per_question": round(statistics.fmean(r["seconds"] for r in mine), 3) if mine else None,
    }


INTERVAL_METRICS = ("site_recall", "precision", "present_found", "absent_not_found_or_uncertain", "auroc")


def scene_intervals(rows: list[dict[str, Any]], system: str, draws: int = 1000, seed: int = 0) -> dict[str, list[float]]:
    """90% intervals of the main metrics over scenes: the scenes are resampled with replacement (a scene's
    questions stay together), so the spread says how much the figure depends on which scenes were drawn."""
    by_scene: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["system"] == system:
            by_scene[r["scene"]].append(r)
    names = sorted(by_scene)
    if len(names) < 2:
        return {}
    rng = random.Random(seed)
    samples: dict[str, list[float]] = {m: [] for m in INTERVAL_METRICS}
    for _ in range(draws):
        pick = [r for name in rng.choices(names, k=len(names)) for r in by_scene[name]]
        summary = summarise(pick, system)
        for m in INTERVAL_METRICS:
            value = summary[m]
            if value is not None and value == value:  # NaN when a resample lacks a class of rows
                samples[m].append(float(value))
    out = {}
    for m, v in samples.items():
        if len(v) >= 20:
            cuts = statistics.quantiles(v, n=20)  # 5% steps: the first and last are the 90% interval
            out[m] = [round(cuts[0], 3), round(cuts[-1], 3)]
    return out


def per_class(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {}
    by: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by[(r["label"], r["system"])].append(r)
    for (label, system), rs in sorted(by.items()):
        wp = [r for r in rs if r["kind"] == "where" and r["present"]]
        pres = [r for r in rs if r["present"]]
        absn = [r for r in rs if not r["present"]]
        entry = table.setdefault(label, {})
        entry[system] = {
            "recall": round(sum(r["covered"] for r in wp) / max(1, sum(r["sites"] for r in wp)), 2) if wp else None,
            "found": round(sum(r["found"] for r in pres) / len(pres), 2) if pres else None,
            "absent_ok": round(sum(not r["found"] for r in absn) / len(absn), 2) if absn else None,
            "n_present": len(pres), "n_absent": len(absn),
        }
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "aid-rsicd")
    ap.add_argument("--scenes", type=int, default=20)
    ap.add_argument("--side", type=int, default=16, help="chip cells per scene side (16 -> 2,400 px)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", default="val", help="chips to build scenes from: val (default), train or all")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "analyst")
    ap.add_argument("--kinds", default=",".join(KINDS), help="question kinds: where,is_there,how_many")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a settings override for the product (e.g. retrieval.top_k=8); default settings otherwise")
    ap.add_argument("--prefill-only", action="store_true", help="build the scenes and fill their indexes, then stop")
    ap.add_argument("--fresh", action="store_true",
                    help="do not fill the indexes first: each scene's first question meets it fresh, as a user's does "
                         "(give a new store with --set store.path=...)")
    ap.add_argument("--rows", type=Path, help="write every question's row as JSON lines here")
    ap.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    args = ap.parse_args()

    from rsrag.agent.interfaces.api import Analyst
    from rsrag.agent.settings import load_settings
    from rsrag.tools.indexing import index_scene
    from rsrag.tools.raster import open_scene

    out = args.out
    t0 = time.perf_counter()
    scenes = build_scene_set(args.data, out / f"scenes-s{args.seed}-{args.side}-{args.split}", n_scenes=args.scenes,
                             seed=args.seed, side=args.side, split=args.split)
    print(f"{len(scenes)} scenes ready in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    overrides: dict[str, Any] = {"store.path": out / "store", "paths.sessions": out / "sessions.sqlite",
                                 "paths.crops": out / "crops", "trace.enabled": False}
    for item in args.set:
        key, _, value = item.partition("=")
        try:  # numbers, lists, true/false as JSON; anything else ("float32", a path) as written
            overrides[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key.strip()] = value
    settings = load_settings(overrides=overrides)
    kinds = [k for k in args.kinds.split(",") if k]
    rows: list[dict[str, Any]] = []
    with Analyst(settings) as analyst:
        ws = analyst.workspace
        threshold = settings.retrieval.fast_threshold
        t1 = time.perf_counter()
        for scene in scenes if not args.fresh else ():  # indexes are filled once and cached in the store under --out
            prefill(ws, scene.path)
        print(f"indexes ready in {time.perf_counter() - t1:.0f} s", file=sys.stderr, flush=True)
        if args.prefill_only:
            return
        n = 0
        for scene in scenes:
            truth = scene.truth
            base_info = None
            if not args.no_baseline:
                t1 = time.perf_counter()
                base_info = index_scene(open_scene(scene.path), ws.encoder, BASELINE_TILING, ws.patches, wait=True).info
                print(f"{scene.path.name}: baseline index in {time.perf_counter() - t1:.0f} s", file=sys.stderr, flush=True)
            targets = [(c, True) for c in truth.present] + [(c, False) for c in truth.absent]
            for label, present in targets:
                n += 1
                sites = truth.present.get(label, ())
                for k, kind in enumerate(kinds):
                    # a synonym for every third question, spread over the question kinds
                    synonym = (n + k) % 3 == 2
                    phrase = phrase_for(label, use_synonym=synonym)
                    text = question(kind, phrase)
                    base = {"scene": truth.scene, "label": label, "present": present, "kind": kind, "phrase": phrase,
                            "synonym": synonym, "question": text}
                    row = product_answer(analyst, scene, text, sites)
                    rows.append({**base, "system": "product", **row})
                    if base_info is not None:
                        rows.append({**base, "system": "baseline",
                                     **baseline_answer(ws, base_info, text, sites, threshold)})
                    print(json.dumps({k: rows[-1 if base_info is None else -2][k] for k in
                                      ("scene", "label", "present", "kind", "phrase", "finding", "covered", "sites",
                                       "cited", "on_site", "count", "seconds")}), file=sys.stderr, flush=True)
    if args.rows:
        args.rows.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    systems = ["product"] + ([] if args.no_baseline else ["baseline"])
    summary = {
        "scenes": len(scenes), "scene_px": args.side * 150, "classes_in_rotation": len(
            {c for s in scenes for c in (*s.truth.present, *s.truth.absent)}),
        "questions_per_system": len([r for r in rows if r["system"] == "product"]),
        "tiling": settings.store.tiling, "encoder": ws.encoder.id,
        **{s: summarise(rows, s) for s in systems},
        "intervals_90": {s: scene_intervals(rows, s) for s in systems},
        "per_class": per_class(rows),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if args.json:
        print(json.dumps(summary))
        return
    print(json.dumps({k: v for k, v in summary.items() if k != "per_class"}, indent=1))
    print("\nclass | product recall / found / absent ok | baseline recall / found / absent ok")
    for label, entry in summary["per_class"].items():
        p, b = entry.get("product", {}), entry.get("baseline", {})
        print(f"{label} | {p.get('recall')} / {p.get('found')} / {p.get('absent_ok')} | "
              f"{b.get('recall')} / {b.get('found')} / {b.get('absent_ok')}")


if __name__ == "__main__":
    main()
