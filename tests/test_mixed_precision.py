"""``train.amp`` (bf16 / fp16 autocast, GradScaler) and ``train.channels_last`` of the plugin's training models, on
CPU: the networks really run in the lower precision, the steps follow fp32 within a tolerance, an fp16 overflow
is skipped and logged, and the scaler's state is saved with the training state and restored."""
import copy

import pytest
import torch
from basicsr.models import build_model
from test_kdsr_models import data_root, hr_batch, in_process, random_teacher_file, train_options  # noqa: F401
from test_pdd_models import batch, generalist, model_opt, vgg_file  # noqa: F401

from kdsr_pdd.resume import model_extra_state
from kdsr_pdd.schema import OptionsError

STEPS = 2  # PDD distils from step 2 (distill_warmup_iters 1)


pytestmark = pytest.mark.usefixtures('one_thread')


def run_steps(model, batches):
    """Train ``model`` on ``batches``; return the log dict of every step and the output dtype of the last."""
    logs = []
    for i, data in enumerate(batches, start=1):
        model.feed_data(copy.deepcopy(data))
        model.optimize_parameters(i)
        logs.append(dict(model.log_dict))
    return logs, model.output.dtype


def assert_close_to_fp32(amp_logs, fp32_logs, rel):
    for step, (low, full) in enumerate(zip(amp_logs, fp32_logs, strict=True), start=1):
        assert low.keys() == full.keys()
        for name in full:
            assert torch.isfinite(torch.tensor(low[name])), (step, name, low[name])
            assert abs(low[name] - full[name]) <= rel * abs(full[name]) + 1e-4, (step, name, low[name], full[name])


def set_scale(scaler, value):
    state = scaler.state_dict()
    state['scale'] = value
    scaler.load_state_dict(state)


def kdsr_model(stage, data_root, tmp_path, **train):  # noqa: F811
    teacher = tmp_path / 'teacher.pth'
    if stage != 'teacher' and not teacher.exists():
        random_teacher_file(teacher)
    torch.manual_seed(0)
    return in_process(train_options(f'amp_{stage}', stage, data_root, teacher=teacher, **train))


@pytest.mark.parametrize('stage', ['teacher', 'student'])
def test_kdsr_bf16_steps_run_in_bf16_and_follow_fp32(stage, data_root, tmp_path):  # noqa: F811
    batches = [{'gt': hr_batch(seed)} for seed in range(STEPS)]
    torch.manual_seed(5)  # the classic degradation draws kernels: the same draws for both runs
    fp32_logs, fp32_dtype = run_steps(kdsr_model(stage, data_root, tmp_path), batches)
    torch.manual_seed(5)
    model = kdsr_model(stage, data_root, tmp_path, amp='bf16')
    bf16_logs, bf16_dtype = run_steps(model, batches)
    assert (fp32_dtype, bf16_dtype) == (torch.float32, torch.bfloat16)
    assert all(p.dtype == torch.float32 for p in model.net_g.parameters())  # the weights stay fp32
    assert_close_to_fp32(bf16_logs, fp32_logs, rel=0.05)


@pytest.fixture(scope='module')
def pdd_model(tmp_path_factory, vgg_file, generalist):  # noqa: F811
    def make(**train):
        torch.manual_seed(0)
        return build_model(model_opt(tmp_path_factory.mktemp('pdd'), generalist[0], vgg_file, 'ema', **train))

    return make


@pytest.fixture(scope='module')
def pdd_fp32_logs(pdd_model):
    """The fp32 log dicts of the PDD steps on ``batch(0..STEPS-1)``."""
    return run_steps(pdd_model(), [batch(seed) for seed in range(STEPS)])[0]


@pytest.mark.parametrize('amp', ['bf16', 'fp16'])
def test_pdd_steps_under_autocast_follow_fp32(pdd_model, pdd_fp32_logs, amp):
    batches = [batch(seed) for seed in range(STEPS)]
    model = pdd_model(amp=amp)
    low_logs, dtype = run_steps(model, batches)
    assert dtype == {'bf16': torch.bfloat16, 'fp16': torch.float16}[amp]
    assert {'l_inter', 'l_intra', 'l_g_gan', 'l_d_real'} <= low_logs[-1].keys()  # G, distillation and D ran
    assert_close_to_fp32(low_logs, pdd_fp32_logs, rel=0.1)


def test_fp16_overflow_is_skipped_logged_and_the_scale_lowered(pdd_model, caplog):
    model = pdd_model(amp='fp16')
    set_scale(model.grad_scaler, 3.0e38)  # any gradient * 3e38 overflows in fp16 / fp32
    before = {k: v.detach().clone() for k, v in model.net_g.named_parameters()}
    run_steps(model, [batch(0)])
    assert all(torch.equal(before[k], v) for k, v in model.net_g.named_parameters())  # the update was not applied
    assert model.grad_scaler.get_scale() < 3.0e38
    assert 'fp16 gradients overflowed' in caplog.text


def test_fp16_scaler_state_travels_with_the_training_state(pdd_model):
    model = pdd_model(amp='fp16')
    set_scale(model.grad_scaler, 1024.0)
    run_steps(model, [batch(0)])
    saved = model_extra_state(model)['hook']
    assert saved['grad_scaler']['scale'] == model.grad_scaler.get_scale()
    resumed = pdd_model(amp='fp16')
    resumed.load_extra_training_state(saved)
    assert resumed.grad_scaler.get_scale() == model.grad_scaler.get_scale() != 65536.0
    assert pdd_model().extra_training_state() == {}  # nothing to save without fp16


def test_channels_last_networks_give_the_fp32_steps(pdd_model, pdd_fp32_logs):
    batches = [batch(seed) for seed in range(STEPS)]
    model = pdd_model(channels_last=True)
    conv = next(m for m in model.net_g.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    channels_last_logs, _ = run_steps(model, batches)
    assert_close_to_fp32(channels_last_logs, pdd_fp32_logs, rel=1e-4)


def test_amp_is_refused_with_a_clear_line_when_misspelt(pdd_model):
    with pytest.raises(OptionsError, match=r"train\.amp: Input should be 'none', 'fp16' or 'bf16'"):
        pdd_model(amp='float16')
