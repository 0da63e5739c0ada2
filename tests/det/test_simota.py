import torch
import torch.nn.functional as F

from cspdet.det import SimOTAAssigner, batched_box_iou, grid_points


def _reference_simota(cls, obj, boxes, centers, strides, gt_boxes, gt_labels, radius=1.5):
    """Straight-from-the-definition SimOTA for ONE image with loops over gts (the oracle for the batched one).

    Returns fg (A,) bool, matched gt (A,) long, matched IoU (A,).
    """
    a, c = cls.shape
    m = gt_boxes.shape[0]
    fg = torch.zeros(a, dtype=torch.bool)
    matched = torch.zeros(a, dtype=torch.long)
    miou = torch.zeros(a)
    if m == 0:
        return fg, matched, miou
    gt_ctr = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
    in_prior = ((centers[None] - gt_ctr[:, None]).abs() < radius * strides[None, :, None]).all(-1)  # (M, A)
    cand = in_prior.any(0).nonzero().flatten()
    ious = batched_box_iou(gt_boxes[None], boxes[cand][None])[0]  # (M, K)
    p = (cls[cand].sigmoid() * obj[cand].sigmoid()[:, None]).sqrt()
    cost = torch.empty(m, len(cand))
    for g in range(m):
        onehot = F.one_hot(gt_labels[g], c).float().expand(len(cand), c)
        cost[g] = F.binary_cross_entropy(p, onehot, reduction="none").sum(-1)
    cost += 3.0 * -torch.log(ious + 1e-8) + 1e6 * (~in_prior[:, cand]).float()
    matching = torch.zeros(m, len(cand), dtype=torch.bool)
    for g in range(m):
        k = max(1, int(ious[g].topk(min(10, len(cand))).values.sum()))
        matching[g, cost[g].topk(k, largest=False).indices] = True
    for j in range(len(cand)):
        claims = matching[:, j].nonzero().flatten()
        if len(claims) == 0:
            continue
        g = int(cost[:, j].argmin()) if len(claims) > 1 else int(claims[0])
        fg[cand[j]], matched[cand[j]], miou[cand[j]] = True, g, ious[g, j]
    return fg, matched, miou


def _setup(size=128, num_classes=5, seed=0, batch=3):
    gen = torch.Generator().manual_seed(seed)
    points, strides = grid_points([(size // s, size // s) for s in (8, 16, 32)], [8, 16, 32])
    centers = (points + 0.5) * strides[:, None]
    a = points.shape[0]
    cls = torch.randn(batch, a, num_classes, generator=gen)
    obj = torch.randn(batch, a, generator=gen)
    ctr = centers + torch.randn(batch, a, 2, generator=gen) * 4
    wh = torch.rand(batch, a, 2, generator=gen) * 40 + 8
    boxes = torch.cat([ctr - wh / 2, ctr + wh / 2], -1)
    return gen, cls, obj, boxes, centers, strides


def test_matches_reference_on_random_padded_batches():
    gen, cls, obj, boxes, centers, strides = _setup()
    m = 6
    xy = torch.rand(3, m, 2, generator=gen) * 90
    gt = torch.cat([xy, xy + torch.rand(3, m, 2, generator=gen) * 40 + 6], -1)
    labels = torch.randint(0, 5, (3, m), generator=gen)
    # Image 0: 4 real boxes interleaved with padding; image 1: none; image 2: all 6.
    mask = torch.tensor([[True, False, True, True, False, True], [False] * 6, [True] * 6])
    gt[~mask] = 0.0  # padding rows are zeros, as the collate function writes them
    out = SimOTAAssigner()(cls, obj, boxes, centers, strides, gt, labels, mask)
    assert out.num_fg[1] == 0
    for b in range(3):
        keep = mask[b].nonzero().flatten()
        fg, matched, miou = _reference_simota(cls[b], obj[b], boxes[b], centers, strides, gt[b, keep], labels[b, keep])
        assert torch.equal(out.fg_mask[b], fg)
        assert torch.equal(out.matched_gt[b][fg], keep[matched[fg]])  # indices into the padded M axis
        torch.testing.assert_close(out.matched_iou[b], miou)
        assert int(out.num_fg[b]) == int(fg.sum())


def test_each_separated_box_gets_a_positive_inside_its_centre_region():
    _, cls, obj, boxes, centers, strides = _setup(seed=1, batch=1)
    gt = torch.tensor([[[4.0, 6, 40, 30], [70, 60, 124, 120], [90, 2, 110, 20]]])
    labels = torch.tensor([[0, 3, 1]])
    out = SimOTAAssigner()(cls, obj, boxes, centers, strides, gt, labels, torch.ones(1, 3, dtype=torch.bool))
    gt_ctr = (gt[0, :, :2] + gt[0, :, 2:]) / 2
    for g in range(3):
        pos = (out.fg_mask[0] & (out.matched_gt[0] == g)).nonzero().flatten()
        assert len(pos) >= 1, f"gt {g} got no positive"
        assert ((centers[pos] - gt_ctr[g]).abs() < 1.5 * strides[pos, None]).all()
    assert (out.matched_iou[0][out.fg_mask[0]] > 0).all()


def test_conflict_goes_to_the_lowest_cost_gt():
    # Two identical boxes that differ only in class, constant objectness, and predictions that differ only in
    # how well they fit the box: both gts rank the points identically and claim the same points, so every
    # positive is a conflict that the class scores (the only cost difference between the gts) must decide.
    gen, _, _, _, centers, strides = _setup(seed=2, batch=1)
    a = centers.shape[0]
    gt = torch.tensor([[[40.0, 40, 80, 88], [40, 40, 80, 88]]])
    boxes = gt[:, :1] + torch.rand(1, a, 4, generator=gen) * 6
    labels = torch.tensor([[0, 1]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    obj = torch.zeros(1, a)
    for favoured in (0, 1):
        cls = torch.full((1, a, 2), -4.0)
        cls[..., favoured] = 4.0
        out = SimOTAAssigner()(cls, obj, boxes, centers, strides, gt, labels, mask)
        assert out.num_fg.item() >= 2
        assert (out.matched_gt[0][out.fg_mask[0]] == favoured).all()


def test_no_targets_and_zero_width_batches():
    _, cls, obj, boxes, centers, strides = _setup(batch=2)
    for m in (0, 3):
        out = SimOTAAssigner()(
            cls, obj, boxes, centers, strides, torch.zeros(2, m, 4), torch.zeros(2, m, dtype=torch.long),
            torch.zeros(2, m, dtype=torch.bool),
        )
        assert not out.fg_mask.any() and out.num_fg.tolist() == [0, 0]
        assert out.fg_mask.shape == out.matched_gt.shape == out.matched_iou.shape == (2, centers.shape[0])


def test_chunked_equals_unchunked():
    gen, cls, obj, boxes, centers, strides = _setup(seed=3)
    xy = torch.rand(3, 4, 2, generator=gen) * 90
    gt = torch.cat([xy, xy + 30], -1)
    labels = torch.randint(0, 5, (3, 4), generator=gen)
    mask = torch.ones(3, 4, dtype=torch.bool)
    full = SimOTAAssigner()(cls, obj, boxes, centers, strides, gt, labels, mask)
    chunked = SimOTAAssigner(max_pairs=1)(cls, obj, boxes, centers, strides, gt, labels, mask)
    assert torch.equal(full.fg_mask, chunked.fg_mask) and torch.equal(full.matched_gt, chunked.matched_gt)
