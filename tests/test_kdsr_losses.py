"""IDRDistillationLoss against hand-computed values (plain math), its invariants and its errors."""
import math

import pytest
import torch
from basicsr.losses import build_loss

import kdsr_pdd.plugin  # noqa: F401  (registers the plugin into BasicSR)
from kdsr_arch.losses import IDRDistillationLoss

STUDENT = [[1.0, 2.0, 0.5], [0.0, -1.0, 0.3]]
TEACHER = [[0.5, 2.5, 0.0], [0.2, -0.5, 0.1]]


def softmax(row, temperature):
    exps = [math.exp(v / temperature) for v in row]
    return [e / sum(exps) for e in exps]


def kl_by_hand(student, teacher, temperature):
    """sum_j p_t log(p_t / p_s), averaged over rows."""
    total = 0.0
    for s_row, t_row in zip(student, teacher):
        p_s, p_t = softmax(s_row, temperature), softmax(t_row, temperature)
        total += sum(pt * math.log(pt / ps) for ps, pt in zip(p_s, p_t))
    return total / len(student)


def flat_diffs():
    return [s - t for s_row, t_row in zip(STUDENT, TEACHER) for s, t in zip(s_row, t_row)]


@pytest.mark.parametrize('temperature', [0.15, 0.5, 2.0])
def test_kl_matches_hand_computation(temperature):
    loss = IDRDistillationLoss(loss_weight=1.5, criterion='kl', temperature=temperature)
    value = loss(torch.tensor(STUDENT, dtype=torch.float64), torch.tensor(TEACHER, dtype=torch.float64))
    assert value.item() == pytest.approx(1.5 * kl_by_hand(STUDENT, TEACHER, temperature), rel=1e-10)


def test_kl_known_value():
    """Two classes, T=1: KL([0.5,0.5] || softmax([ln 3, 0]) = [0.75,0.25]) = 0.5 ln(0.5/0.75) + 0.5 ln(0.5/0.25)."""
    loss = IDRDistillationLoss(criterion='kl', temperature=1.0)
    value = loss(torch.tensor([[math.log(3.0), 0.0]]), torch.tensor([[0.0, 0.0]]))
    assert value.item() == pytest.approx(0.5 * math.log(2 / 3) + 0.5 * math.log(2), rel=1e-6)


def test_l1_and_l2_match_hand_computation():
    diffs = flat_diffs()
    student, teacher = torch.tensor(STUDENT), torch.tensor(TEACHER)
    l1 = IDRDistillationLoss(loss_weight=2.0, criterion='l1')(student, teacher)
    l2 = IDRDistillationLoss(loss_weight=2.0, criterion='l2')(student, teacher)
    assert l1.item() == pytest.approx(2.0 * sum(abs(d) for d in diffs) / len(diffs), rel=1e-6)
    assert l2.item() == pytest.approx(2.0 * sum(d * d for d in diffs) / len(diffs), rel=1e-6)


@pytest.mark.parametrize('criterion', ['kl', 'l1', 'l2'])
def test_zero_when_student_equals_teacher(criterion):
    idr = torch.randn(4, 16)
    assert IDRDistillationLoss(criterion=criterion)(idr, idr.clone()).abs().item() < 1e-6


@pytest.mark.parametrize('criterion', ['kl', 'l1', 'l2'])
def test_gradient_reaches_student_only(criterion):
    student = torch.tensor(STUDENT, requires_grad=True)
    teacher = torch.tensor(TEACHER, requires_grad=True)
    IDRDistillationLoss(criterion=criterion)(student, teacher).backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_kl_gradient_by_hand():
    """d/ds_j of KL(p_t || p_s) with batchmean is (p_s,j - p_t,j) / (T * B)."""
    temperature = 0.5
    student = torch.tensor(STUDENT, dtype=torch.float64, requires_grad=True)
    teacher = torch.tensor(TEACHER, dtype=torch.float64)
    IDRDistillationLoss(criterion='kl', temperature=temperature)(student, teacher).backward()
    for b, (s_row, t_row) in enumerate(zip(STUDENT, TEACHER)):
        p_s, p_t = softmax(s_row, temperature), softmax(t_row, temperature)
        for j in range(3):
            expected = (p_s[j] - p_t[j]) / (temperature * len(STUDENT))
            assert student.grad[b, j].item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_bad_options_and_inputs():
    with pytest.raises(ValueError, match="criterion 'cosine'"):
        IDRDistillationLoss(criterion='cosine')
    with pytest.raises(ValueError, match='temperature'):
        IDRDistillationLoss(temperature=0)
    with pytest.raises(ValueError, match='same shape'):
        IDRDistillationLoss()(torch.zeros(2, 4), torch.zeros(2, 5))


def test_registered_in_basicsr():
    loss = build_loss({'type': 'IDRDistillationLoss', 'loss_weight': 1.0, 'criterion': 'kl', 'temperature': 0.15})
    assert isinstance(loss, IDRDistillationLoss) and loss.temperature == 0.15
