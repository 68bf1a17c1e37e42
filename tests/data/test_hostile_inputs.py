"""Hostile annotation files never crash and never pass silently.

Every case runs in ONE child process under an address-space limit (its size after the imports
plus 1.5 GB), so a crash in pycocotools' C code (a segfault, or memory without bound) fails
the case it happened in instead of taking down the test runner. A case either loads (bad
numbers clipped or the annotation skipped with a warning naming its id) or raises an error
naming the file and the record; the expectations below are checked per case.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from levelset_rcnn.data import CocoInstanceDataset, DatasetError
from levelset_rcnn.data.converters import convert_yolo_seg, write_coco_json
from levelset_rcnn.data.sanity import decode_rle_string

H, W = 20, 30
NAN, INF = float("nan"), float("inf")
TRI = [2.0, 2.0, 20.0, 2.0, 2.0, 15.0]
GOOD_RLE = {"size": [H, W], "counts": [100, 50, H * W - 150]}
# a valid compressed string, of a 40 x 40 mask: its counts sum to 1600, not H * W
_BIG = mask_utils.encode(np.asfortranarray(np.ones((40, 40), np.uint8)))["counts"].decode()


def _ann(**fields):
    ann = {"id": 7, "image_id": 1, "category_id": 1, "segmentation": [TRI],
           "bbox": [2.0, 2.0, 18.0, 13.0], "area": 117.0, "iscrowd": 0}
    ann.update(fields)
    return ann


# name -> (kind, payload, expectation)
#   kind "yolo": payload is one label line; "coco": one annotation (or a whole file under
#   "file"); "lvis": one annotation of an LVIS file.
#   expectation: ("error", [substrings]) | ("skipped", [substrings of the warning]) |
#                ("loaded", {checks})
CASES = {
    "yolo_nan": ("yolo", "0 nan 0.1 0.5 0.5 0.2 0.9", ("error", [":1:", "not a finite"])),
    "yolo_all_nan": ("yolo", "0 nan nan nan nan nan nan", ("error", [":1:", "not a finite"])),
    "yolo_inf": ("yolo", "0 0.1 inf 0.5 0.5 0.2 0.9", ("error", [":1:", "not a finite"])),
    "yolo_overflow": ("yolo", "0 0.1 1e999 0.5 0.5 0.2 0.9", ("error", [":1:", "finite"])),
    "yolo_huge": ("yolo", "0 0.1 1e9 0.5 0.5 0.2 0.9", ("error", [":1:", "normalised"])),
    "yolo_huge_class": ("yolo", "99999999999999999999 0.1 0.1 0.5 0.5 0.2 0.9",
                        ("error", [":1:", "class index"])),
    "poly_far_outside": ("coco", _ann(segmentation=[[0.0, 0.0, 1e9, 0.0, 1e9, 1e9]],
                                      bbox=[0.0, 0.0, 30.0, 20.0]),
                         ("loaded", {"instances": 1, "pixels_max": H * W})),
    "poly_absurd": ("coco", _ann(segmentation=[[0.0, 0.0, 1e300, 0.0, 5.0, 5.0]]),
                    ("skipped", ["annotation id 7", "absurd"])),
    "poly_nan": ("coco", _ann(segmentation=[[2.0, 2.0, NAN, 2.0, 2.0, 15.0]]),
                 ("skipped", ["annotation id 7", "not finite"])),
    "poly_inf": ("coco", _ann(segmentation=[[2.0, 2.0, INF, 2.0, 2.0, 15.0]]),
                 ("skipped", ["annotation id 7", "not finite"])),
    "poly_string": ("coco", _ann(segmentation=[[2.0, 2.0, "x", 2.0, 2.0, 15.0]]),
                    ("skipped", ["annotation id 7", "not a number"])),
    "bbox_nan": ("coco", _ann(bbox=[NAN, 2.0, 18.0, 13.0]),
                 ("skipped", ["annotation id 7", "'bbox'"])),
    "bbox_inf": ("coco", _ann(bbox=[2.0, 2.0, INF, 13.0]),
                 ("skipped", ["annotation id 7", "'bbox'"])),
    "rle_corrupt_string": ("coco", _ann(segmentation={"size": [H, W], "counts": "0000zzzzzz"}),
                           ("skipped", ["annotation id 7", "corrupt"])),
    "rle_string_cut_short": ("coco", _ann(segmentation={"size": [H, W], "counts": "0h"}),
                             ("skipped", ["annotation id 7", "cut short"])),
    "rle_string_oversum": ("coco", _ann(segmentation={"size": [H, W], "counts": _BIG}),
                           ("skipped", ["annotation id 7", "sum to"])),
    "rle_negative": ("coco", _ann(segmentation={"size": [H, W], "counts": [5, -3, 598]}),
                     ("skipped", ["annotation id 7", "negative"])),
    "rle_oversum": ("coco", _ann(segmentation={"size": [H, W], "counts": [5, 10**9]}),
                    ("skipped", ["annotation id 7", "sum to"])),
    "rle_float_counts": ("coco", _ann(segmentation={"size": [H, W], "counts": [NAN, 600]}),
                         ("skipped", ["annotation id 7", "integers"])),
    "rle_size_mismatch": ("coco", _ann(segmentation={"size": [H, W + 1], "counts": [H * W]}),
                          ("error", ["ann.json", "annotation id 7", "size"])),
    "rle_size_nan": ("coco", _ann(segmentation={"size": [NAN, NAN], "counts": [600]}),
                     ("error", ["ann.json", "annotation id 7", "size"])),
    "rle_good": ("coco", _ann(segmentation=GOOD_RLE, bbox=None),
                 ("loaded", {"instances": 1, "pixels": 50})),
    "area_nan": ("coco", _ann(area=NAN), ("loaded", {"instances": 1, "finite_area": True})),
    "iscrowd_nan": ("coco", _ann(iscrowd=NAN), ("skipped", ["annotation id 7", "iscrowd"])),
    "image_absurd_size": ("coco", {"file": {"images": [
        {"id": 1, "file_name": "a.png", "height": 10**12, "width": W}],
        "annotations": [], "categories": [{"id": 1, "name": "thing"}]}},
        ("error", ["ann.json", "image id 1", "height"])),
    "no_annotations_section": ("coco", {"file": {"images": [
        {"id": 1, "file_name": "a.png", "height": H, "width": W}],
        "categories": [{"id": 1, "name": "thing"}]}},
        ("error", ["ann.json", "missing the 'annotations' section"])),
    "empty_annotations": ("coco", {"file": {"images": [
        {"id": 1, "file_name": "a.png", "height": H, "width": W}], "annotations": [],
        "categories": [{"id": 1, "name": "thing"}]}},
        ("loaded", {"instances": 0, "log": "no instances"})),
    "lvis_bbox_nan": ("lvis", _ann(bbox=[NAN, 0.0, 1.0, 1.0]),
                      ("error", ["lvis.json", "annotation id 7", "'bbox'"])),
    "lvis_poly_far": ("lvis", _ann(segmentation=[[0.0, 0.0, 1e9, 0.0, 1e9, 1e9]]),
                      ("error", ["lvis.json", "annotation id 7", "far outside"])),
    "lvis_area_inf": ("lvis", _ann(area=INF), ("error", ["lvis.json", "annotation id 7",
                                                          "'area'"])),
}

CHILD = textwrap.dedent('''
    import contextlib, io, json, logging, os, resource, sys
    from pathlib import Path

    import numpy as np
    import torch
    from PIL import Image

    from levelset_rcnn.cli import main
    from levelset_rcnn.data import CocoInstanceDataset, DatasetError
    from levelset_rcnn.data.lvis_json import LVISFormatError, check_lvis_dict
    from levelset_rcnn.evaluation import COCOEvaluator

    vm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmSize"))
    limit = vm * 1024 + (1536 << 20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    cases, root = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])
    H, W = 20, 30
    log = io.StringIO()
    logging.basicConfig(stream=log, level=logging.WARNING, force=True)

    def coco(name, payload):
        folder = root / name
        folder.mkdir()
        Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(folder / "a.png")
        data = payload.get("file") or {
            "images": [{"id": 1, "file_name": "a.png", "height": H, "width": W}],
            "annotations": [{k: v for k, v in payload.items() if v is not None}],
            "categories": [{"id": 1, "name": "thing"}]}
        (folder / "ann.json").write_text(json.dumps(data))  # NaN written as JSON's NaN
        ds = CocoInstanceDataset(folder, folder / "ann.json", train=False)
        image, t = ds[0]
        out = {"instances": len(t["labels"]), "pixels": int(t["masks"].sum()),
               "num_skipped": ds.num_skipped,
               "finite_area": bool(torch.isfinite(t["area"]).all())}
        if len(t["labels"]):  # the evaluator rasterises the ground truth again
            ev = COCOEvaluator(ds.coco, label_to_cat_id=ds.label_to_cat_id, boundary_ap=False)
            pred = {"boxes": t["boxes"], "labels": t["labels"],
                    "scores": torch.ones(len(t["labels"])),
                    "masks": t["masks"][:, None].float()}
            ev.process([t], [pred])
            out["AP"] = ev.evaluate()["segm/masks"]["AP"]
        return out

    def yolo(name, line):
        folder = root / name
        (folder / "images").mkdir(parents=True)
        (folder / "labels").mkdir()
        Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(folder / "images" / "a.png")
        (folder / "labels" / "a.txt").write_text(line + "\\n")
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(["convert", "yolo-seg", str(folder / "images"), str(folder / "labels"),
                       str(folder / "out.json"), "--quiet"])
        if rc != 0:
            raise DatasetError(err.getvalue().strip())
        def not_json(c):
            raise ValueError(f"{c} in the converted JSON")

        data = json.loads((folder / "out.json").read_text(), parse_constant=not_json)
        return {"instances": len(data["annotations"])}

    def lvis(name, ann):
        data = {"images": [{"id": 1, "height": H, "width": W, "neg_category_ids": [],
                            "not_exhaustive_category_ids": []}],
                "categories": [{"id": 1, "name": "thing", "synset": "thing.n.01",
                                "frequency": "f"}],
                "annotations": [ann]}
        check_lvis_dict(data, root / name / "lvis.json")
        return {}

    for case in cases:
        name, kind, payload = case
        print("START", name, flush=True)
        log.seek(0)
        log.truncate()
        res = {"name": name}
        try:
            res.update({"coco": coco, "yolo": yolo, "lvis": lvis}[kind](name, payload))
        except (DatasetError, LVISFormatError) as exc:
            res["error"] = str(exc)
        except MemoryError:
            res["unexpected"] = "MemoryError"
        except Exception as exc:
            res["unexpected"] = f"{type(exc).__name__}: {exc}"
        res["log"] = log.getvalue()
        print("RESULT", json.dumps(res), flush=True)
    sys.stdout.flush()
    os._exit(0)  # skip torch's slow interpreter teardown
''')


@pytest.fixture(scope="module")
def hostile_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("hostile")
    spec = root / "cases.json"
    spec.write_text(json.dumps([[n, kind, payload] for n, (kind, payload, _) in CASES.items()]))
    proc = subprocess.run([sys.executable, "-c", CHILD, str(spec), str(root)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    results, started = {}, None
    for line in proc.stdout.splitlines():
        if line.startswith("START "):
            started = line[6:]
        elif line.startswith("RESULT "):
            res = json.loads(line[7:])
            results[res["name"]] = res
    if proc.returncode != 0:
        pytest.fail(f"the child died (rc {proc.returncode}) in case {started!r}: "
                    f"{proc.stderr[-2000:]}")
    return results


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input_is_refused_or_handled(name: str, hostile_results: dict[str, dict]
                                            ) -> None:
    res = hostile_results[name]
    assert "unexpected" not in res, res
    outcome, want = CASES[name][2]
    if outcome == "error":
        assert "error" in res, res
        for part in want:
            assert part in res["error"], (part, res["error"])
    elif outcome == "skipped":
        assert "error" not in res, res
        assert res["num_skipped"] == 1 and res["instances"] == 0, res
        for part in want:
            assert part in res["log"], (part, res["log"])
    else:
        assert "error" not in res, res
        assert res["instances"] == want["instances"], res
        if "pixels_max" in want:
            assert 0 < res["pixels"] <= want["pixels_max"] and res["AP"] == pytest.approx(100)
        if "pixels" in want:
            assert res["pixels"] == want["pixels"], res
        if "finite_area" in want:
            assert res["finite_area"], res
        if "log" in want:
            assert want["log"] in res["log"], res


def test_decode_rle_string_matches_pycocotools() -> None:
    rng = np.random.default_rng(0)
    for t in range(50):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        m = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        if t % 5 == 0:
            m[:] = t % 2
        rle = mask_utils.encode(np.asfortranarray(m))
        runs = decode_rle_string(rle["counts"].decode())
        flat = m.ravel(order="F")
        edges = np.flatnonzero(np.diff(flat)) + 1
        want = np.diff(np.concatenate(([0], edges, [flat.size])))
        if flat[0] == 1:
            want = np.concatenate(([0], want))
        assert runs.tolist() == want.tolist()


def _yolo_tree(tmp_path: Path) -> tuple[Path, Path]:
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(images / "a.png")
    (labels / "a.txt").write_text("0 0.1 0.1 0.6 0.1 0.1 0.7\n")
    return images, labels


def test_truncated_image_is_caught_at_conversion(tmp_path: Path, capsys) -> None:
    from levelset_rcnn.cli import main

    images, labels = _yolo_tree(tmp_path)
    big = np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8)
    Image.fromarray(big).save(images / "b.png")
    data = (images / "b.png").read_bytes()
    (images / "b.png").write_bytes(data[: len(data) // 2])
    (labels / "b.txt").write_text("0 0.1 0.1 0.6 0.1 0.1 0.7\n")
    with pytest.raises(DatasetError, match=r"b\.png"):
        convert_yolo_seg(images, labels, tmp_path / "out.json", progress=False)
    assert not (tmp_path / "out.json").exists()
    # headers only: converts, and says the images were not verified
    assert main(["convert", "yolo-seg", str(images), str(labels), str(tmp_path / "out.json"),
                 "--quiet", "--no-verify"]) == 0
    assert "not verified" in capsys.readouterr().out


def test_label_file_without_image_is_warned_and_counted(tmp_path: Path, caplog, capsys) -> None:
    from levelset_rcnn.cli import main

    images, labels = _yolo_tree(tmp_path)
    (labels / "ghost.txt").write_text("0 0.1 0.1 0.6 0.1 0.1 0.7\n")
    with caplog.at_level(logging.WARNING):
        assert main(["convert", "yolo-seg", str(images), str(labels),
                     str(tmp_path / "out.json"), "--quiet"]) == 0
    assert "ghost.txt" in caplog.text and "1 label file(s) have no image" in caplog.text
    assert "1 label file(s) without an image left out" in capsys.readouterr().out


def test_write_coco_json_refuses_nan_and_leaves_no_temp_file(tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    (tmp_path / "x.json.tmp").write_text("left by a killed run")
    with pytest.raises(DatasetError, match=r"x\.json.*non-finite"):
        write_coco_json({"images": [], "annotations": [{"bbox": [float("nan")] * 4}],
                         "categories": []}, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_missing_annotations_is_an_error_and_zero_instances_a_warning(tmp_path: Path, caplog
                                                                      ) -> None:
    Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(tmp_path / "a.png")
    base = {"images": [{"id": 1, "file_name": "a.png", "height": H, "width": W}],
            "categories": [{"id": 1, "name": "thing"}]}
    (tmp_path / "none.json").write_text(json.dumps(base))
    with pytest.raises(DatasetError, match=r"none\.json: missing the 'annotations' section"):
        CocoInstanceDataset(tmp_path, tmp_path / "none.json")
    (tmp_path / "empty.json").write_text(json.dumps({**base, "annotations": []}))
    with caplog.at_level(logging.WARNING):
        CocoInstanceDataset(tmp_path, tmp_path / "empty.json")
    assert "empty.json: no instances" in caplog.text
