"""KDSR networks: IDR-DDC against a per-sample oracle, the authors' parameter counts and key layout,
checkpoint loading, forward semantics and ONNX export."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from basicsr.archs import build_network

import kdsr_pdd.plugin  # noqa: F401  (registers the plugin into BasicSR)
from kdsr_arch import archs
from kdsr_arch.archs import IDRDCRB, IDRDDC, KDIDE, KDSRStudent, KDSRTeacher, MeanShift
from kdsr_pdd.checkpoints import CheckpointError, load_weights

# (n_feats, n_blocks, n_encoder_res) of the paper's sizes
VARIANTS = {'M': (64, 53, 9), 'L': (128, 28, 5), 'GAN': (128, 42, 6)}
# Authors' parameter counts (reference facts, section 3.2), MeanShift params included.
PARAM_COUNTS = {
    ('M', 4): (5_822_747, 5_795_099), ('M', 2): (5_654_299, 5_647_387), ('M', 3): (5_847_579, 5_832_027),
    ('L', 4): (14_246_299, 14_191_003), ('L', 2): (13_614_491, 13_600_667), ('L', 3): (14_369_691, 14_338_587),
    ('GAN', 4): (18_901_403, 18_846_107),
}
ENTRY_COUNTS = {'M': 276, 'L': 160, 'GAN': 220}
TINY = dict(n_feats=8, n_blocks=2, n_encoder_res=1)


def expected_layout(n_feats, n_blocks, n_encoder_res, scale, teacher):
    """Key -> shape of the authors' checkpoints, written out from the reference table (section 2)."""
    c, n = n_feats, n_encoder_res
    layout = {}
    for name in ('sub_mean', 'add_mean'):
        layout[f'G.{name}.weight'], layout[f'G.{name}.bias'] = (3, 3, 1, 1), (3, )
    layout['G.head.0.weight'], layout['G.head.0.bias'] = (c, 3, 3, 3), (c, )
    for i in range(n_blocks):
        block = f'G.body.0.body.{i}'
        layout[f'{block}.da_conv1.kernel.0.weight'] = (c, c)
        layout[f'{block}.da_conv1.kernel.2.weight'] = (9 * c, c)
        layout[f'{block}.conv1.weight'], layout[f'{block}.conv1.bias'] = (c, c, 3, 3), (c, )
    layout['G.body.1.weight'], layout['G.body.1.bias'] = (c, c, 3, 3), (c, )
    up = {2: [(0, 4)], 3: [(0, 9)], 4: [(0, 4), (2, 4)]}[scale]
    for idx, factor in up:
        layout[f'G.tail.0.{idx}.weight'], layout[f'G.tail.0.{idx}.bias'] = (factor * c, c, 3, 3), (factor * c, )
    layout['G.tail.1.weight'], layout['G.tail.1.bias'] = (3, c, 3, 3), (3, )
    p = 'E.' if teacher else 'E_st.'
    cin = 3 + 3 * scale**2 if teacher else 3
    layout[f'{p}E.0.weight'], layout[f'{p}E.0.bias'] = (c, cin, 3, 3), (c, )
    for j in range(2, n + 2):
        for conv in (0, 2):
            layout[f'{p}E.{j}.body.{conv}.weight'], layout[f'{p}E.{j}.body.{conv}.bias'] = (c, c, 3, 3), (c, )
    for idx, (cout, cin_) in zip((n + 2, n + 4, n + 6), ((2 * c, c), (2 * c, 2 * c), (4 * c, 2 * c))):
        layout[f'{p}E.{idx}.weight'], layout[f'{p}E.{idx}.bias'] = (cout, cin_, 3, 3), (cout, )
    for name, (cout, cin_) in (('mlp.0', (4 * c, 4 * c)), ('mlp.2', (4 * c, 4 * c)), ('compress.0', (c, 4 * c))):
        layout[f'{p}{name}.weight'], layout[f'{p}{name}.bias'] = (cout, cin_), (cout, )
    return layout


def shapes(net):
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def per_sample_oracle(ddc, x, z):
    """Per-sample depthwise conv with kernels computed by hand from the generator's weights."""
    w1, w2 = ddc.kernel[0].weight, ddc.kernel[2].weight
    hidden = z @ w1.T
    hidden = torch.where(hidden > 0, hidden, 0.1 * hidden)
    k = ddc.kernel_size
    kernels = (hidden @ w2.T).view(z.shape[0], z.shape[1], k, k)
    return torch.cat([
        F.conv2d(x[b:b + 1], kernels[b].unsqueeze(1), padding=k // 2, groups=x.shape[1]) for b in range(x.shape[0])
    ])


def make_input(layout, b, c=5, h=7, w=6):
    base = torch.randn(b, c, h, w)
    if layout == 'contiguous':
        return base
    if layout == 'channels_last':
        return base.contiguous(memory_format=torch.channels_last)
    if layout == 'transposed':  # non-contiguous view
        return torch.randn(b, c, w, h).transpose(2, 3)
    return torch.randn(b, 2 * c, h, w)[:, ::2]  # 'strided': every other channel


# ---------------------------------------------------------------------------------------------- IDR-DDC


@pytest.mark.parametrize('layout', ['contiguous', 'channels_last', 'transposed', 'strided'])
@pytest.mark.parametrize('batch', [1, 3])
def test_ddc_matches_per_sample_conv(layout, batch):
    torch.manual_seed(0)
    ddc = IDRDDC(5)
    x, z = make_input(layout, batch), torch.randn(batch, 5)
    assert layout == 'contiguous' or not x.is_contiguous()
    with torch.no_grad():
        torch.testing.assert_close(ddc(x, z), per_sample_oracle(ddc, x, z), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('layout', ['contiguous', 'channels_last', 'strided'])
@pytest.mark.parametrize('kernel_size', [3, 5])
@pytest.mark.parametrize('impl', [archs._depthwise_batch_folded, archs._depthwise_by_shifts])
def test_both_ddc_formulations_match_oracle(impl, kernel_size, layout):
    """The eager (batch-folded) and export (shift-and-add) formulations both equal the per-sample loop."""
    torch.manual_seed(1)
    ddc = IDRDDC(5, kernel_size)
    x, z = make_input(layout, 3), torch.randn(3, 5)
    with torch.no_grad():
        kernels = ddc.kernel(z).view(3, 5, kernel_size, kernel_size)
        torch.testing.assert_close(impl(x, kernels), per_sample_oracle(ddc, x, z), rtol=1e-5, atol=1e-5)


def test_ddc_kernel_layout_by_hand():
    """Channel c of sample b is filtered by generator outputs [9c, 9c+9) in row-major 3x3 order."""
    ddc = IDRDDC(2)
    with torch.no_grad():
        ddc.kernel[0].weight.copy_(torch.eye(2))
        ddc.kernel[2].weight.zero_()
        ddc.kernel[2].weight[9 + 5, 0] = 1.0  # channel 1, row 1, column 2 <- z[:, 0]
        x = torch.arange(2 * 9, dtype=torch.float32).view(1, 2, 3, 3)
        out = ddc(x, torch.tensor([[2.0, 0.0]]))
    # correlation with a single tap at (1, 2): out[y, x] = 2 * in[y, x + 1], zero beyond the right border
    expected = np.zeros((2, 3, 3), np.float32)
    xin = np.arange(18, dtype=np.float32).reshape(2, 3, 3)
    expected[1, :, :2] = 2 * xin[1, :, 1:]
    np.testing.assert_array_equal(out[0].numpy(), expected)


def test_ddc_rejects_bad_shapes():
    with pytest.raises(ValueError, match='kernels'):
        archs.depthwise_conv2d_per_sample(torch.zeros(2, 3, 4, 4), torch.zeros(1, 3, 3, 3))
    with pytest.raises(ValueError, match='odd'):
        archs.depthwise_conv2d_per_sample(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 2, 2))


def test_dcrb_with_zero_idr_is_identity_plus_bias():
    """z = 0 makes every dynamic kernel zero, so the block is x + conv1(0) = x + bias."""
    torch.manual_seed(2)
    block = IDRDCRB(4)
    x = torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        out = block(x, torch.zeros(2, 4))
    torch.testing.assert_close(out, x + block.conv1.bias.view(1, 4, 1, 1))


# ------------------------------------------------------------------------------ sizes and key layout


@pytest.mark.parametrize('variant,scale', sorted(PARAM_COUNTS))
def test_parameter_counts_match_authors(variant, scale):
    n_feats, n_blocks, n_enc = VARIANTS[variant]
    with torch.device('meta'):  # no memory, no init cost
        teacher = KDSRTeacher(n_feats, n_blocks, n_enc, scale)
        student = KDSRStudent(n_feats, n_blocks, n_enc, scale)
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert (count(teacher), count(student)) == PARAM_COUNTS[(variant, scale)]
    trainable = sum(p.numel() for p in student.parameters() if p.requires_grad)
    assert trainable == count(student) - 24  # the two frozen MeanShifts


@pytest.mark.parametrize('variant,scale', [('M', 4), ('L', 4), ('GAN', 4), ('M', 2), ('L', 3)])
@pytest.mark.parametrize('teacher', [True, False])
def test_state_dict_layout_matches_authors(variant, scale, teacher):
    cfg = VARIANTS[variant]
    with torch.device('meta'):
        net = (KDSRTeacher if teacher else KDSRStudent)(*cfg, scale=scale)
    assert shapes(net) == expected_layout(*cfg, scale, teacher)
    if scale == 4:
        assert len(net.state_dict()) == ENTRY_COUNTS[variant]


def test_example_keys_from_reference():
    with torch.device('meta'):
        m_teacher = KDSRTeacher(*VARIANTS['M'])
        gan_student = KDSRStudent(*VARIANTS['GAN'])
    assert tuple(m_teacher.state_dict()['E.E.0.weight'].shape) == (64, 51, 3, 3)
    assert tuple(gan_student.state_dict()['E_st.E.12.weight'].shape) == (512, 256, 3, 3)
    assert tuple(m_teacher.state_dict()['G.body.0.body.3.da_conv1.kernel.0.weight'].shape) == (64, 64)


# ----------------------------------------------------------------------------------- checkpoints


def random_checkpoint(teacher, scale=4):
    torch.manual_seed(3)
    layout = expected_layout(TINY['n_feats'], TINY['n_blocks'], TINY['n_encoder_res'], scale, teacher)
    return {k: torch.randn(shape) for k, shape in layout.items()}


def assert_loaded(net, state):
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0, msg=k)


def test_strict_load_raw_state_dict(tmp_path):
    """Classic releases are raw state dicts of the bare BlindSR."""
    state = random_checkpoint(teacher=False)
    torch.save(state, tmp_path / 'KDSRsM_iso_x4.pt')
    net = KDSRStudent(**TINY)
    assert load_weights(net, str(tmp_path / 'KDSRsM_iso_x4.pt')) is None
    assert_loaded(net, state)
    assert net(torch.rand(1, 3, 4, 4)).shape == (1, 3, 16, 16)


def test_strict_load_basicsr_container(tmp_path):
    """KDSR-GAN releases hold {'params', 'params_ema'}; params_ema is preferred."""
    ema = random_checkpoint(teacher=True)
    raw = {k: torch.zeros_like(v) for k, v in ema.items()}
    torch.save({'params': raw, 'params_ema': ema}, tmp_path / 'KDSRT-rec.pth')
    net = KDSRTeacher(**TINY)
    assert load_weights(net, str(tmp_path / 'KDSRT-rec.pth')) == 'params_ema'
    assert_loaded(net, ema)


def test_teacher_checkpoint_does_not_fit_student(tmp_path):
    torch.save({'params': random_checkpoint(teacher=True)}, tmp_path / 'teacher.pth')
    with pytest.raises(CheckpointError, match='E_st'):
        load_weights(KDSRStudent(**TINY), str(tmp_path / 'teacher.pth'))


# ------------------------------------------------------------------------------- forward semantics


def test_meanshift_is_frozen_and_correct():
    mean = torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1)
    sub, add = MeanShift(-1), MeanShift(+1)
    x = torch.rand(2, 3, 4, 5)
    with torch.no_grad():
        torch.testing.assert_close(sub(x), x - mean)
        torch.testing.assert_close(add(sub(x)), x)
    student = KDSRStudent(**TINY)
    frozen = {k for k, p in student.named_parameters() if not p.requires_grad}
    assert frozen == {'G.sub_mean.weight', 'G.sub_mean.bias', 'G.add_mean.weight', 'G.add_mean.bias'}
    before = student.G.add_mean.bias.clone()
    optimizer = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=0.1)
    student(torch.rand(1, 3, 4, 4)).mean().backward()
    optimizer.step()
    assert torch.equal(student.G.add_mean.bias, before)


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_forward_shapes_and_explicit_returns(scale):
    torch.manual_seed(4)
    teacher, student = KDSRTeacher(**TINY, scale=scale), KDSRStudent(**TINY, scale=scale)
    lq = torch.rand(2, 3, 6, 5)
    gt = torch.rand(2, 3, 6 * scale, 5 * scale)
    c = TINY['n_feats']
    args = {teacher: (lq, gt), student: (lq, )}
    outputs = {}
    for mode in ('train', 'eval'):  # one meaning in both modes
        for net in (teacher, student):
            getattr(net, mode)()
            sr = net(*args[net])
            assert isinstance(sr, torch.Tensor) and sr.shape == (2, 3, 6 * scale, 5 * scale)
            sr2, idr = net(*args[net], return_idr=True)
            z, idr2 = net.encode(*args[net])
            assert idr.shape == (2, 4 * c) and z.shape == (2, c)
            torch.testing.assert_close(sr2, sr)
            torch.testing.assert_close(idr2, idr)
            outputs.setdefault(net, []).append((sr.detach(), idr.detach()))
    for (sr_train, idr_train), (sr_eval, idr_eval) in outputs.values():
        torch.testing.assert_close(sr_train, sr_eval)
        torch.testing.assert_close(idr_train, idr_eval)


def test_teacher_input_is_lr_and_unshuffled_hr():
    """Channel 3 + c*s*s + i*s + j of the teacher input is gt[c, y*s+i, x*s+j] (nn.PixelUnshuffle order)."""
    torch.manual_seed(5)
    s, h, w = 2, 3, 4
    teacher = KDSRTeacher(**TINY, scale=s).eval()
    lq, gt = torch.rand(1, 3, h, w), torch.rand(1, 3, s * h, s * w)
    by_hand = torch.zeros(1, 3 + 3 * s * s, h, w)
    by_hand[:, :3] = lq
    for c in range(3):
        for i in range(s):
            for j in range(s):
                by_hand[0, 3 + c * s * s + i * s + j] = gt[0, c, i::s, j::s]
    with torch.no_grad():
        z, idr = teacher.encode(lq, gt)
        z_ref, idr_ref = teacher.E(by_hand)
    torch.testing.assert_close(idr, idr_ref)
    torch.testing.assert_close(z, z_ref)


def test_teacher_rejects_wrong_gt_size():
    teacher = KDSRTeacher(**TINY, scale=4)
    with pytest.raises(ValueError, match=r'gt must have shape \(1, 3, 16, 20\)'):
        teacher(torch.rand(1, 3, 4, 5), torch.rand(1, 3, 16, 16))


def test_student_is_per_sample():
    """A batch gives the same SR and IDR as its samples one by one (no cross-sample mixing)."""
    torch.manual_seed(6)
    student = KDSRStudent(**TINY).eval()
    lq = torch.rand(3, 3, 5, 6)
    with torch.no_grad():
        sr, idr = student(lq, return_idr=True)
        singles = [student(lq[b:b + 1], return_idr=True) for b in range(3)]
    torch.testing.assert_close(sr, torch.cat([s for s, _ in singles]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(idr, torch.cat([i for _, i in singles]), rtol=1e-5, atol=1e-5)


def test_encoder_outputs():
    """idr = mlp(spatial mean of the conv trunk), post-LeakyReLU, 4C wide; z = LeakyReLU0.1(compress.0(idr))."""
    torch.manual_seed(7)
    encoder = KDIDE(3, n_feats=4, n_encoder_res=1)
    lrelu = lambda t: torch.where(t > 0, t, 0.1 * t)  # noqa: E731
    linear = lambda t, m: t @ m.weight.T + m.bias  # noqa: E731
    x = torch.rand(2, 3, 5, 5)
    with torch.no_grad():
        z, idr = encoder(x)
        pooled = encoder.E[:-1](x).mean(dim=(2, 3))
        idr_ref = lrelu(linear(lrelu(linear(pooled, encoder.mlp[0])), encoder.mlp[2]))
    assert idr.shape == (2, 16) and z.shape == (2, 4)
    torch.testing.assert_close(idr, idr_ref)
    torch.testing.assert_close(z, lrelu(linear(idr, encoder.compress[0])))


def test_registered_and_buildable():
    net = build_network({'type': 'KDSRStudent', **TINY, 'scale': 2})
    assert isinstance(net, KDSRStudent) and net.scale == 2
    assert isinstance(build_network({'type': 'KDSRTeacher', **TINY}), KDSRTeacher)


# ---------------------------------------------------------------------------------------------- export


def test_onnx_export_dynamic_shapes(tmp_path):
    """The exported student runs in onnxruntime for other batch sizes and spatial sizes than traced."""
    onnx = pytest.importorskip('onnx')
    ort = pytest.importorskip('onnxruntime')
    torch.manual_seed(8)
    student = KDSRStudent(**TINY, scale=2).eval()
    path = tmp_path / 'student.onnx'
    torch.onnx.export(
        student, (torch.rand(1, 3, 8, 8), ), str(path), dynamo=False, opset_version=17, input_names=['lq'],
        output_names=['sr'], dynamic_axes={'lq': {0: 'b', 2: 'h', 3: 'w'}, 'sr': {0: 'b', 2: 'sh', 3: 'sw'}})
    onnx.checker.check_model(onnx.load(str(path)))
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    for shape in [(1, 3, 11, 7), (3, 3, 6, 13)]:
        lq = torch.rand(shape)
        with torch.no_grad():
            expected = student(lq).numpy()
        (got, ) = session.run(None, {'lq': lq.numpy()})
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_torch_export_dynamic_batch_and_size():
    """torch.export captures the batch-independent DDC form: one program serves other batch and image sizes."""
    torch.manual_seed(9)
    student = KDSRStudent(**TINY, scale=2).eval()
    dims = {0: torch.export.Dim('b', max=64), 2: torch.export.Dim('h', min=2, max=4096),
            3: torch.export.Dim('w', min=2, max=4096)}
    program = torch.export.export(student, (torch.rand(2, 3, 8, 8), ), dynamic_shapes={'lq': dims})
    lq = torch.rand(3, 3, 5, 7)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(lq), student(lq), rtol=1e-5, atol=1e-5)
