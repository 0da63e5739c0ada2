"""Tests for cspdet/det/tal.py, dfl.py, iou_loss.py, tal_loss.py and nms_free.py: task-aligned assignment, DFL,
CIoU, NMS-free top-k."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou, complete_box_iou

from cspdet.det import (
    Targets,
    TaskAlignedAssigner,
    TaskAlignedLoss,
    batched_box_ciou,
    bbox2dist,
    dfl_expectation,
    dist2bbox,
    distribution_focal_loss,
    grid_points,
    o2m_weight_schedule,
    topk_postprocess,
)


def _grid(size=128):
    cells, strides = grid_points([(size // s, size // s) for s in (8, 16, 32)], [8, 16, 32])
    return (cells + 0.5) * strides[:, None], strides


def _pred_boxes(centers, batch, gen, lo=24.0, hi=56.0):
    """Boxes around each point's centre (so a point inside a gt always overlaps it: IoU > 0, no ties at 0)."""
    a = centers.shape[0]
    ctr = centers + torch.randn(batch, a, 2, generator=gen) * 2
    wh = torch.rand(batch, a, 2, generator=gen) * (hi - lo) + lo
    return torch.cat([ctr - wh / 2, ctr + wh / 2], -1)


def _reference_tal(scores, boxes, centers, gt, labels, topk, alpha, beta, topk2=None, small_box=(8.0, 16.0)):
    """Task-aligned assignment for ONE image straight from the definition, looping over gts and points (the
    oracle for the batched assigner; plain IoU). Returns fg (A,), matched (A,), target score (A,)."""
    a, m = centers.shape[0], gt.shape[0]
    fg, matched, target = torch.zeros(a, dtype=torch.bool), torch.zeros(a, dtype=torch.long), torch.zeros(a)
    if m == 0:
        return fg, matched, target
    align, ious, claims = torch.zeros(m, a), torch.zeros(m, a), torch.zeros(m, a, dtype=torch.bool)
    for g in range(m):
        x1, y1, x2, y2 = gt[g].tolist()
        cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
        if small_box is not None:
            w, h = (small_box[1] if w < small_box[0] else w), (small_box[1] if h < small_box[0] else h)
        inside = ((centers[:, 0] > cx - w / 2) & (centers[:, 0] < cx + w / 2) & (centers[:, 1] > cy - h / 2)
                  & (centers[:, 1] < cy + h / 2)).nonzero().flatten()
        ious[g, inside] = box_iou(gt[g : g + 1], boxes[inside])[0]
        align[g, inside] = scores[inside, labels[g]] ** alpha * ious[g, inside] ** beta
        best = inside[align[g, inside].argsort(descending=True)[:topk]]
        claims[g, best] = True
    won = torch.zeros(m, a, dtype=torch.bool)
    for j in range(a):
        owners = claims[:, j].nonzero().flatten()
        if len(owners):
            won[owners[ious[owners, j].argmax()], j] = True
    if topk2 is not None:
        for g in range(m):
            mine = won[g].nonzero().flatten()
            won[g] = False
            won[g, mine[align[g, mine].argsort(descending=True)[:topk2]]] = True
    for g in range(m):
        mine = won[g].nonzero().flatten()
        if len(mine):
            fg[mine], matched[mine] = True, g
            target[mine] = align[g, mine] / align[g, mine].max() * ious[g, mine].max()
    return fg, matched, target


@pytest.mark.parametrize("topk,topk2", [(10, None), (4, None), (7, 1)])
def test_matches_reference_on_random_padded_batches(topk, topk2):
    gen = torch.Generator().manual_seed(topk)
    centers, _ = _grid()
    b, m, c = 3, 6, 5
    boxes = _pred_boxes(centers, b, gen)
    scores = torch.rand(b, centers.shape[0], c, generator=gen)
    xy = torch.rand(b, m, 2, generator=gen) * 90
    gt = torch.cat([xy, xy + torch.rand(b, m, 2, generator=gen) * 40 + 4], -1)
    gt[0, 1] = torch.tensor([50.0, 50, 55, 53])  # a tiny box (widened for the candidate test)
    labels = torch.randint(0, c, (b, m), generator=gen)
    mask = torch.tensor([[True, True, False, True, False, True], [False] * 6, [True] * 6])
    gt[~mask] = 0.0
    assigner = TaskAlignedAssigner(topk=topk, alpha=0.5, beta=6.0, topk2=topk2, iou_type="iou")
    out = assigner(scores, boxes, centers, gt, labels, mask)
    assert out.num_fg[1] == 0
    for i in range(b):
        keep = mask[i].nonzero().flatten()
        fg, matched, target = _reference_tal(scores[i], boxes[i], centers, gt[i, keep], labels[i, keep], topk, 0.5,
                                             6.0, topk2)
        assert torch.equal(out.fg_mask[i], fg)
        assert torch.equal(out.matched_gt[i][fg], keep[matched[fg]])  # indices into the padded M axis
        torch.testing.assert_close(out.target_scores[i], target)
        torch.testing.assert_close(out.target_boxes[i][fg], gt[i, keep[matched[fg]]])
        assert torch.equal(out.target_labels[i][fg], labels[i, keep[matched[fg]]])
        if topk2 == 1:  # one-to-one: one positive per gt at most
            assert torch.bincount(out.matched_gt[i][fg], minlength=m).max() <= 1


def test_topk_candidates_inside_the_box_by_alignment():
    centers, _ = _grid()
    a = centers.shape[0]
    gt = torch.tensor([[[20.0, 20, 84, 76]]])
    # Every point predicts the gt box itself (IoU 1), so the alignment ranks by class score alone.
    boxes = gt.expand(1, a, 4).clone()
    scores = torch.rand(1, a, 3, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(1, 1, dtype=torch.bool)
    out = TaskAlignedAssigner(topk=5)(scores, boxes, centers, gt, torch.tensor([[2]]), mask)
    inside = ((centers > gt[0, 0, :2]) & (centers < gt[0, 0, 2:])).all(1)
    pos = out.fg_mask[0].nonzero().flatten()
    assert len(pos) == 5 and inside[pos].all()
    best_inside = scores[0, :, 2].masked_fill(~inside, -1).topk(5).indices
    assert set(pos.tolist()) == set(best_inside.tolist())
    # Soft targets: the best point gets the gt's best overlap (1 here), the others their alignment relative to it.
    t = out.target_scores[0, pos]
    torch.testing.assert_close(t.max(), torch.tensor(1.0))
    torch.testing.assert_close(t, (scores[0, pos, 2] / scores[0, pos, 2].max()).sqrt())  # alpha 0.5, IoU 1
    assert (out.target_scores[0][~out.fg_mask[0]] == 0).all()


def test_conflict_goes_to_the_gt_with_the_highest_iou():
    centers, _ = _grid()
    a = centers.shape[0]
    # Two overlapping gts; every point predicts the same box, which fits gt 1 better than gt 0.
    gt = torch.tensor([[[16.0, 16, 80, 80], [30, 30, 76, 70]]])
    pred = torch.tensor([32.0, 30, 76, 72])
    boxes = pred.expand(1, a, 4).clone()
    scores = torch.rand(1, a, 2, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(1, 2, dtype=torch.bool)
    in1 = ((centers > gt[0, 1, :2]) & (centers < gt[0, 1, 2:])).all(1)
    assert in1.sum() == 32  # gt 1 claims all of its candidates with topk 40; gt 0 claims 40 of its 81
    out = TaskAlignedAssigner(topk=40, iou_type="iou")(scores, boxes, centers, gt, torch.tensor([[0, 1]]), mask)
    assert box_iou(pred[None], gt[0])[0, 1] > box_iou(pred[None], gt[0])[0, 0]
    # Every point predicts the same box, so gt 0 ranks its candidates by class-0 score alone: its claims are known,
    # and some of them are gt 1's points (real conflicts).
    in0 = ((centers > gt[0, 0, :2]) & (centers < gt[0, 0, 2:])).all(1)
    claims0 = torch.zeros(a, dtype=torch.bool)
    claims0[scores[0, :, 0].masked_fill(~in0, -1).topk(40).indices] = True
    assert (claims0 & in1).sum() >= 5
    assert out.fg_mask[0][in1].all() and (out.matched_gt[0][in1] == 1).all()  # contested points -> gt 1
    only0 = out.fg_mask[0] & ~in1
    assert only0.any() and (out.matched_gt[0][only0] == 0).all()  # gt 0 keeps the points only it claimed


def test_one_to_one_falls_back_to_the_next_best_point_after_a_conflict():
    centers, _ = _grid()
    a = centers.shape[0]
    gen = torch.Generator().manual_seed(3)
    gt = torch.tensor([[[8.0, 8, 72, 72], [24, 24, 56, 56]]])
    boxes = _pred_boxes(centers, 1, gen)
    # The highest class-0 score sits at a point both gts contain; the conflict gives it to gt 1 (higher IoU).
    scores = torch.full((1, a, 1), 0.1)
    both = ((centers > gt[0, 1, :2]) & (centers < gt[0, 1, 2:])).all(1).nonzero().flatten()
    j = both[0]
    boxes[0, j] = gt[0, 1]
    scores[0, j] = 0.99
    out = TaskAlignedAssigner(topk=7, topk2=1)(scores, boxes, centers, gt, torch.zeros(1, 2, dtype=torch.long),
                                                torch.ones(1, 2, dtype=torch.bool))
    assert out.num_fg.item() == 2  # each gt still gets exactly one positive
    assert out.fg_mask[0, j] and out.matched_gt[0, j] == 1
    assert torch.bincount(out.matched_gt[0][out.fg_mask[0]]).tolist() == [1, 1]


def test_tiny_boxes_get_positives_only_with_the_small_box_widening():
    centers, _ = _grid()
    a = centers.shape[0]
    # A 6x6 box in the gap between centres (stride 8: ..., 28, 36; stride 16: 24, 40; stride 32: 16, 48).
    gt = torch.tensor([[[29.0, 29, 35, 35], [60, 60, 100, 100]]])
    boxes = _pred_boxes(centers, 1, torch.Generator().manual_seed(0), 8, 16)
    scores = torch.full((1, a, 1), 0.3)
    args = (scores, boxes, centers, gt, torch.zeros(1, 2, dtype=torch.long), torch.ones(1, 2, dtype=torch.bool))
    plain = TaskAlignedAssigner(small_box=None)(*args)
    assert not (plain.fg_mask[0] & (plain.matched_gt[0] == 0)).any()
    stal = TaskAlignedAssigner()(*args)  # default (8, 16): widened to 16 px for the candidate test
    pos = (stal.fg_mask[0] & (stal.matched_gt[0] == 0)).nonzero().flatten()
    assert len(pos) >= 1 and (stal.target_scores[0, pos] > 0).all()
    assert ((centers[pos] - 32.0).abs() < 8).all()  # from the widened 16 x 16 box about the centre
    # The big box is unaffected by the option.
    assert torch.equal(plain.fg_mask[0] & (plain.matched_gt[0] == 1), stal.fg_mask[0] & (stal.matched_gt[0] == 1))


def test_empty_targets_chunking_and_logit_scores():
    centers, _ = _grid()
    gen = torch.Generator().manual_seed(1)
    boxes = _pred_boxes(centers, 3, gen)
    logits = torch.randn(3, centers.shape[0], 4, generator=gen)
    for m in (0, 3):  # no gt column at all, or only padding
        out = TaskAlignedAssigner()(logits.sigmoid(), boxes, centers, torch.zeros(3, m, 4),
                                    torch.zeros(3, m, dtype=torch.long), torch.zeros(3, m, dtype=torch.bool))
        assert not out.fg_mask.any() and out.num_fg.tolist() == [0, 0, 0] and not out.target_scores.any()
        assert out.target_boxes.shape == (3, centers.shape[0], 4)
    xy = torch.rand(3, 4, 2, generator=gen) * 90
    gt = torch.cat([xy, xy + 30], -1)
    labels = torch.randint(0, 4, (3, 4), generator=gen)
    mask = torch.ones(3, 4, dtype=torch.bool)
    full = TaskAlignedAssigner()(logits.sigmoid(), boxes, centers, gt, labels, mask)
    chunked = TaskAlignedAssigner(max_pairs=1)(logits.sigmoid(), boxes, centers, gt, labels, mask)
    from_logits = TaskAlignedAssigner()(logits, boxes, centers, gt, labels, mask, scores_are_logits=True)
    for other in (chunked, from_logits):
        assert torch.equal(full.fg_mask, other.fg_mask) and torch.equal(full.matched_gt, other.matched_gt)
        torch.testing.assert_close(full.target_scores, other.target_scores)


def test_ciou_overlap_is_torchvisions():
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(2, 7, 2, generator=gen) * 50
    b1 = torch.cat([xy, xy + torch.rand(2, 7, 2, generator=gen) * 30 + 1], -1)
    xy = torch.rand(2, 9, 2, generator=gen) * 50
    b2 = torch.cat([xy, xy + torch.rand(2, 9, 2, generator=gen) * 30 + 1], -1)
    ours = batched_box_ciou(b1, b2)
    for i in range(2):
        torch.testing.assert_close(ours[i], complete_box_iou(b1[i], b2[i]), rtol=1e-4, atol=1e-5)


def test_dfl_encode_decode_round_trip():
    gen = torch.Generator().manual_seed(0)
    points = torch.rand(50, 2, generator=gen) * 40 + 0.5
    dist = torch.rand(50, 4, generator=gen) * 14.9
    boxes = dist2bbox(dist, points)
    torch.testing.assert_close(bbox2dist(points, boxes), dist, rtol=0, atol=1e-5)
    torch.testing.assert_close(bbox2dist(points, boxes, reg_max=16), dist, rtol=0, atol=1e-5)
    far = dist2bbox(torch.tensor([[20.0, 0.0, 3.0, 1.0]]), torch.tensor([[5.0, 5.0]]))
    assert bbox2dist(torch.tensor([[5.0, 5.0]]), far, reg_max=16).tolist() == [[pytest.approx(14.99), 0.0, 3.0, 1.0]]
    # The distribution DFL's optimum puts on the two neighbouring bins decodes to the distance exactly.
    reg_max, t = 16, dist[:8]
    left = t.floor().long()
    prob = torch.zeros(8, 4, reg_max)
    prob.scatter_(2, left[..., None], (left + 1 - t)[..., None])
    prob.scatter_add_(2, (left + 1)[..., None], (t - left)[..., None])
    logits = prob.clamp(min=1e-12).log().flatten(1)
    project = torch.arange(reg_max, dtype=torch.float32)
    torch.testing.assert_close(dfl_expectation(logits, project), t, rtol=0, atol=1e-4)
    # ... and DFL is minimal there: its gradient vanishes (CE against the two-bin soft target).
    logits.requires_grad_(True)
    distribution_focal_loss(logits, t).sum().backward()
    assert logits.grad.abs().max() < 1e-5
    # A one-hot at the wrong bin costs more than at the right one.
    bad = F.one_hot((left + 3).clamp(max=reg_max - 1), reg_max).float().flatten(1) * 20
    assert (distribution_focal_loss(bad, t) > distribution_focal_loss(logits.detach(), t) + 1).all()


def _loss_inputs(reg_max, batch=2, size=64, c=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    cells, strides = grid_points([(size // s, size // s) for s in (8, 16, 32)], [8, 16, 32])
    anchors = cells + 0.5
    a = anchors.shape[0]
    box_out = torch.randn(batch, a, 4 * reg_max, generator=gen, requires_grad=True)
    cls = torch.randn(batch, a, c, generator=gen, requires_grad=True)
    if reg_max > 1:
        dist = dfl_expectation(box_out, torch.arange(reg_max, dtype=torch.float32))
    else:
        dist = F.softplus(box_out)
    return box_out, dist, cls, anchors, strides


@pytest.mark.parametrize("reg_max", [16, 1])
def test_loss_is_finite_with_zero_box_batches(reg_max):
    loss = TaskAlignedLoss(3, reg_max)
    for targets, mask in ((torch.zeros(2, 0, 5), torch.zeros(2, 0, dtype=torch.bool)),
                          (torch.zeros(2, 2, 5), torch.zeros(2, 2, dtype=torch.bool))):
        box_out, dist, cls, anchors, strides = _loss_inputs(reg_max)
        out = loss(box_out, dist, cls, anchors, strides, Targets.from_packed(targets, mask))
        assert set(out) == {"loss", "box_loss", "cls_loss", "dfl_loss", "num_fg"}
        assert torch.isfinite(out["loss"]) and out["num_fg"] == 0 and out["box_loss"] == 0 and out["dfl_loss"] == 0
        # Background only: the class loss is the BCE of every logit against 0 (normalised by 1).
        torch.testing.assert_close(out["cls_loss"], 0.5 * F.binary_cross_entropy_with_logits(
            cls, torch.zeros_like(cls), reduction="sum").detach())
        out["loss"].backward()
        assert torch.isfinite(cls.grad).all() and cls.grad.abs().sum() > 0
    # One image with boxes, one without.
    targets = torch.tensor([[[1.0, 4, 8, 40, 50], [0, 30, 30, 60, 62]], [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]])
    mask = torch.tensor([[True, True], [False, False]])
    out = loss(box_out, dist, cls, anchors, strides, Targets.from_packed(targets, mask))
    assert torch.isfinite(out["loss"]) and out["num_fg"] > 0 and out["box_loss"] > 0 and out["dfl_loss"] > 0
    with pytest.raises(ValueError, match="class ids"):
        loss(box_out, dist, cls, anchors, strides, Targets.from_packed(targets.index_fill(2, torch.tensor([0]), 3.0),
                                                                       mask))
    # the earlier call with a packed tensor and its mask still works, warns, and gives the same losses exactly
    with pytest.warns(DeprecationWarning, match="TaskAlignedLoss: packed"):
        old = loss(box_out, dist, cls, anchors, strides, targets, mask)
    assert all(torch.equal(old[k], out[k]) for k in out)


def test_loss_class_term_equals_library_bce_with_soft_targets():
    box_out, dist, cls, anchors, strides = _loss_inputs(16, seed=4)
    targets = Targets(torch.tensor([[[4.0, 8, 40, 50]], [[20, 10, 60, 60]]]), torch.tensor([[1], [2]]),
                      torch.ones(2, 1, dtype=torch.bool))
    loss = TaskAlignedLoss(3, 16)
    out = loss(box_out, dist, cls, anchors, strides, targets)
    pred_boxes = dist2bbox(dist, anchors) * strides[:, None]
    assign = loss.assigner(cls.detach().sigmoid(), pred_boxes.detach(), anchors * strides[:, None], targets.boxes,
                           targets.labels, targets.mask)
    soft = F.one_hot(assign.target_labels, 3) * assign.target_scores[..., None]
    expected = F.binary_cross_entropy_with_logits(cls, soft, reduction="sum") / assign.target_scores.sum()
    torch.testing.assert_close(out["cls_loss"], 0.5 * expected.detach())


def test_positives_can_be_chosen_by_another_branchs_predictions():
    """``assign_from``: another branch's (class logits, distances) choose the positives; the loss is still of this
    branch's outputs. With this branch flat, its one-to-one positive is where the other branch is best."""
    box_out, dist, cls, anchors, strides = _loss_inputs(16, batch=1, seed=2)
    targets = Targets(torch.tensor([[[4.0, 8, 40, 50]]]), torch.tensor([[1]]), torch.ones(1, 1, dtype=torch.bool))
    loss = TaskAlignedLoss(3, 16, TaskAlignedAssigner(topk=7, topk2=1))
    # given its own predictions, the same call with and without assign_from agree exactly
    own = loss(box_out, dist, cls, anchors, strides, targets)
    same = loss(box_out, dist, cls, anchors, strides, targets, assign_from=(cls, dist))
    assert all(torch.equal(own[k], same[k]) for k in own)
    # the other branch is confident at one point inside the box, whose box is the gt's: that point is the positive
    centre = (anchors * strides[:, None] - torch.tensor([22.0, 29.0])).norm(dim=1).argmin()
    other_cls = torch.full_like(cls, -6.0).detach()
    other_cls[0, centre, 1] = 6.0
    px = anchors[centre] * strides[centre]
    other_dist = dist.detach().clone()
    other_dist[0, centre] = torch.stack([px[0] - 4, px[1] - 8, 40 - px[0], 50 - px[1]]) / strides[centre]
    flat_cls = torch.zeros_like(cls, requires_grad=True)
    out = loss(box_out, dist, flat_cls, anchors, strides, targets, assign_from=(other_cls, other_dist))
    assert out["num_fg"] == 1
    out["loss"].backward()
    # the one positive is the only point whose class-1 logit is pushed up
    assert flat_cls.grad[0, :, 1].argmin() == centre and (flat_cls.grad[0, :, 1] < 0).sum() == 1
    assert other_cls.grad is None  # used detached


def test_topk_postprocess_is_the_exact_topk_over_points_and_classes():
    gen = torch.Generator().manual_seed(0)
    b, n, c = 2, 40, 6
    cxcy = torch.rand(b, n, 2, generator=gen) * 100
    preds = torch.cat([cxcy, torch.rand(b, n, 2, generator=gen) * 20 + 1, torch.ones(b, n, 1),
                       torch.rand(b, n, c, generator=gen)], -1)
    out = topk_postprocess(preds, conf=0.3, max_det=15)
    for i in range(b):
        scores = preds[i, :, 5:].flatten()
        top = scores.topk(15)
        keep = top.values >= 0.3
        torch.testing.assert_close(out[i]["scores"], top.values[keep])
        assert torch.equal(out[i]["labels"], top.indices[keep] % c)
        pts = top.indices[keep] // c
        ctr, wh = preds[i, pts, :2], preds[i, pts, 2:4]
        expected = torch.cat([ctr - wh / 2, ctr + wh / 2], 1)
        torch.testing.assert_close(out[i]["boxes"], expected)
    only = topk_postprocess(preds, conf=0.0, max_det=10, classes=[2, 4])
    assert all(set(r["labels"].tolist()) <= {2, 4} and len(r["labels"]) == 10 for r in only)
    assert [len(r["scores"]) for r in topk_postprocess(preds, conf=0.0, max_det=1000)] == [n * c, n * c]
    with pytest.raises(ValueError, match="max_det"):
        topk_postprocess(preds, max_det=0)


def test_o2m_weight_schedule():
    assert o2m_weight_schedule(0.0) == pytest.approx(0.8) and o2m_weight_schedule(1.0) == pytest.approx(0.1)
    assert o2m_weight_schedule(0.5) == pytest.approx(0.45) and o2m_weight_schedule(7.0) == pytest.approx(0.1)
    assert o2m_weight_schedule(0.5, start=0.5, end=0.5) == 0.5


def test_a_decaying_loss_weight_shrinks_adams_late_steps():
    """What YOLO26's 0.8 -> 0.1 one-to-many weight does under AdamW in a short run (small_scratch: 210-570 steps):
    a gradient scaled by the weight, against Adam's second moment (beta2 0.999) that still averages the early,
    larger gradients, gives the last steps about a quarter of a constant weight's (0.27 at 210 steps, 0.25 at 300,
    0.24 at 570; 0.30 at 3,000, where beta2 starts forgetting). With detached one-to-one features this
    is the backbone's effective learning rate (the reason ``small_scratch`` holds the mix at 0.5)."""
    steps = 300

    def last_step(weight):
        p = torch.zeros(1, requires_grad=True)
        opt = torch.optim.AdamW([p], lr=1.0, weight_decay=0.0)
        for t in range(steps):
            before = p.detach().clone()
            opt.zero_grad()
            (weight(t) * p).sum().backward()  # a constant unit gradient times the loss weight
            opt.step()
        return float((p.detach() - before).abs())

    decayed = last_step(lambda t: o2m_weight_schedule(t / (steps - 1)))
    constant = last_step(lambda t: 0.5)
    assert constant == pytest.approx(1.0, rel=1e-3)  # Adam's step is lr whatever the constant scale
    assert 0.15 < decayed / constant < 0.3


def test_bad_arguments():
    with pytest.raises(ValueError, match="topk"):
        TaskAlignedAssigner(topk=0)
    with pytest.raises(ValueError, match="topk2"):
        TaskAlignedAssigner(topk2=0)
    with pytest.raises(ValueError, match="iou_type"):
        TaskAlignedAssigner(iou_type="giou")
    with pytest.raises(ValueError, match="small_box"):
        TaskAlignedAssigner(small_box=(16.0, 8.0))
