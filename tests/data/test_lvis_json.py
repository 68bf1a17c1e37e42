"""The LVIS file-format knowledge shared by the converter and the evaluator: the COCO <->
LVIS synset table and the mapping of COCO category ids to an LVIS file's categories."""

from __future__ import annotations

from levelset_rcnn.data.converters import COCO80_CAT_IDS, COCO80_NAMES
from levelset_rcnn.data.lvis_json import COCO_LVIS_SYNSETS, coco_to_lvis_category_ids

from ..evaluation.test_lvis_evaluator import CAR, DOG, PERSON, make_lvis


def test_synset_table_is_the_80_coco_classes():
    assert sorted(COCO_LVIS_SYNSETS) == list(COCO80_CAT_IDS)
    assert [COCO_LVIS_SYNSETS[i][0] for i in COCO80_CAT_IDS] == list(COCO80_NAMES)
    assert len({s for _, s in COCO_LVIS_SYNSETS.values()}) == 80
    # Entries typed in from lvis-api's coco_to_synset.json (all but frank.n.02 are also in
    # LVIS v1's category list).
    known = {1: "person.n.01", 13: "stop_sign.n.01", 21: "beef.n.01", 31: "bag.n.04",
             33: "bag.n.06", 58: "frank.n.02", 64: "pot.n.04", 72: "television_receiver.n.01",
             89: "hand_blower.n.01"}
    for coco_id, synset in known.items():
        assert COCO_LVIS_SYNSETS[coco_id][1] == synset


def test_mapping_by_synset():
    got = coco_to_lvis_category_ids(make_lvis()["categories"], [1, 3, 18], source="x.json")
    assert got == {1: PERSON, 3: CAR, 18: DOG}
