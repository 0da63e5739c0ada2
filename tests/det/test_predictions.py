"""The typed prediction record, the deploy layout of exported files, and the post-processing that reads both."""

import pytest
import torch
from torchvision.ops import box_convert

from cspdet.det import (
    Predictions,
    filter_dets,
    from_deploy_layout,
    nms_dets,
    postprocess,
    to_deploy_layout,
    topk_dets,
    topk_postprocess,
)


def _record(b=2, n=50, c=4, objectness=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(b, n, 2, generator=g) * 100
    wh = torch.rand(b, n, 2, generator=g) * 30 + 2
    boxes = torch.cat((xy, xy + wh), -1)
    cls = torch.rand(b, n, c, generator=g)
    obj = torch.rand(b, n, generator=g) if objectness else None
    return Predictions(boxes=boxes, class_scores=cls, objectness=obj)


def test_invalid_records_are_refused_with_the_field_named():
    boxes = torch.zeros(1, 3, 4)
    with pytest.raises(ValueError, match="boxes must be"):
        Predictions(boxes=torch.zeros(3, 4), class_scores=torch.zeros(1, 3, 2))
    with pytest.raises(ValueError, match="exactly one"):
        Predictions(boxes=boxes)
    with pytest.raises(ValueError, match="class_scores must be"):
        Predictions(boxes=boxes, class_scores=torch.zeros(1, 4, 2))
    with pytest.raises(ValueError, match="objectness must be"):
        Predictions(boxes=boxes, class_scores=torch.zeros(1, 3, 2), objectness=torch.zeros(1, 4))
    with pytest.raises(ValueError, match="scores and .labels"):
        Predictions(boxes=boxes, scores=torch.zeros(1, 3))


def test_scores_are_objectness_times_class_probability_as_yolox():
    p = _record()
    scores, labels = p.best_class()
    cls_prob, expected_labels = p.class_scores.max(-1)
    assert torch.equal(scores, p.objectness * cls_prob) and torch.equal(labels, expected_labels)
    assert torch.equal(p.score_matrix(), p.objectness[..., None] * p.class_scores)
    plain = _record(objectness=False)
    assert torch.equal(plain.best_class()[0], plain.class_scores.max(-1).values)


def test_deploy_layout_is_yolox_and_reads_back():
    p = _record()
    layout = to_deploy_layout(p)
    assert layout.shape == (2, 50, 5 + 4)
    torch.testing.assert_close(layout[..., :4], box_convert(p.boxes, "xyxy", "cxcywh"))
    assert torch.equal(layout[..., 4], p.objectness) and torch.equal(layout[..., 5:], p.class_scores)
    back = from_deploy_layout(layout)
    torch.testing.assert_close(back.boxes, p.boxes, atol=1e-4, rtol=0)
    assert torch.equal(back.score_matrix(), p.score_matrix())
    # a head without objectness: the layout's column of ones, which multiplies exactly
    plain = _record(objectness=False)
    assert (to_deploy_layout(plain)[..., 4] == 1).all()
    assert torch.equal(from_deploy_layout(to_deploy_layout(plain)).score_matrix(), plain.class_scores)


def test_postprocess_reads_a_record_and_a_deploy_tensor_alike():
    p = _record()
    layout = to_deploy_layout(p)
    for kwargs in ({}, {"multi_label": True}, {"agnostic": True}, {"classes": [1, 3]}, {"pre_nms_topk": 10}):
        a = postprocess(p, conf=0.2, iou=0.5, **kwargs)
        b = postprocess(layout, conf=0.2, iou=0.5, **kwargs)
        assert sum(len(d["scores"]) for d in a) > 0
        for x, y in zip(a, b):
            torch.testing.assert_close(x["scores"], y["scores"])
            torch.testing.assert_close(x["boxes"], y["boxes"], atol=1e-4, rtol=0)
            assert torch.equal(x["labels"], y["labels"])


def test_one_label_per_box_records_post_process_without_class_scores():
    p = _record(objectness=False)
    scores, labels = p.best_class()
    per_box = Predictions(boxes=p.boxes, scores=scores, labels=labels)
    for ml in (False, True):  # multi-label on one label per box is single-label
        a, b = postprocess(p, conf=0.3, iou=0.5), postprocess(per_box, conf=0.3, iou=0.5, multi_label=ml)
        for x, y in zip(a, b):
            assert torch.equal(x["scores"], y["scores"]) and torch.equal(x["labels"], y["labels"])
    top = topk_postprocess(per_box, conf=0.3, max_det=7, classes=[0, 2])
    assert all(len(d["scores"]) <= 7 and set(d["labels"].tolist()) <= {0, 2} for d in top)
    assert torch.equal(top[0]["scores"], scores[0][(scores[0] >= 0.3) & (labels[0] % 2 == 0)].sort(
        descending=True).values[:7])
    with pytest.raises(ValueError, match="num_classes"):
        to_deploy_layout(per_box)
    one_hot = to_deploy_layout(per_box, num_classes=4)
    assert torch.equal(one_hot[..., 5:].amax(-1), scores)


def test_graph_post_processing_equals_the_runtime_one():
    """What an --nms export computes in its graph (nms_dets / topk_dets, read back by filter_dets) equals what the
    runtime computes from its predictions (postprocess / topk_postprocess)."""
    p = _record(n=200)
    for got, want in ((filter_dets(nms_dets(p, 0.3, 0.5, 20), 0.3, 20), postprocess(p, conf=0.3, iou=0.5, max_det=20)),
                      (filter_dets(topk_dets(p, 20), 0.3, 20), topk_postprocess(p, conf=0.3, max_det=20))):
        for x, y in zip(got, want):
            assert torch.equal(x["scores"], y["scores"]) and torch.equal(x["labels"], y["labels"])
            assert torch.equal(x["boxes"], y["boxes"])
    padded = nms_dets(p, 0.99, 0.5, 20)
    assert padded.shape == (2, 20, 6) and (padded[..., 4] < 0.99).sum() > 0  # zero rows pad to max_det
    assert postprocess(p, conf=0.3, max_det=20, nms_free=True)[0]["scores"].tolist() == \
        topk_postprocess(p, conf=0.3, max_det=20)[0]["scores"].tolist()
