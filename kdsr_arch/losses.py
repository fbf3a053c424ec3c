"""Knowledge-distillation loss on KDSR's implicit degradation representations (IDR)."""
import torch.nn.functional as F
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

CRITERIA = ('kl', 'l1', 'l2')


@LOSS_REGISTRY.register()
class IDRDistillationLoss(nn.Module):
    """Distance between the student's and the teacher's IDR: student_idr, teacher_idr [B,D] -> scalar.

    ``criterion``:
      - ``'kl'`` (paper): KL(softmax(t/T) || softmax(s/T)) summed over D, averaged over B ("batchmean"),
        with T = ``temperature`` and no T^2 factor, as in the authors' training code;
      - ``'l1'`` / ``'l2'``: mean absolute / mean squared difference over all elements (T unused).

    The teacher IDR is detached: gradients flow to the student only. The result is scaled by ``loss_weight``.
    """

    def __init__(self, loss_weight: float = 1.0, criterion: str = 'kl', temperature: float = 0.15):
        super().__init__()
        if criterion not in CRITERIA:
            raise ValueError(f'IDRDistillationLoss: unknown criterion {criterion!r}; choose one of {CRITERIA}')
        if criterion == 'kl' and not temperature > 0:
            raise ValueError(f'IDRDistillationLoss: temperature must be > 0, got {temperature}')
        self.loss_weight = loss_weight
        self.criterion = criterion
        self.temperature = temperature

    def forward(self, student_idr, teacher_idr):
        if student_idr.dim() != 2 or student_idr.shape != teacher_idr.shape:
            raise ValueError('IDRDistillationLoss expects student and teacher IDRs of the same shape [B,D], got '
                             f'{tuple(student_idr.shape)} and {tuple(teacher_idr.shape)}')
        teacher_idr = teacher_idr.detach()
        if self.criterion == 'kl':
            log_p_student = F.log_softmax(student_idr / self.temperature, dim=1)
            log_p_teacher = F.log_softmax(teacher_idr / self.temperature, dim=1)
            loss = F.kl_div(log_p_student, log_p_teacher, reduction='batchmean', log_target=True)
        elif self.criterion == 'l1':
            loss = F.l1_loss(student_idr, teacher_idr)
        else:
            loss = F.mse_loss(student_idr, teacher_idr)
        return self.loss_weight * loss
