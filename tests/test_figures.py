"""Figures: the fidelity-perception scatter from BasicSR logs, the KDSR IDR plot of tiny random teacher /
student checkpoints, PCA and Spearman against independent oracles (eigh, scipy)."""
import csv
import json
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from scipy import stats
from test_tables import RESULTS, make_test_results

from kdsr_arch.archs import KDSRStudent, KDSRTeacher
from kdsr_arch.degradations import ClassicDegradation, isotropic_gaussian_kernels
from kdsr_pdd.commands import figures
from kdsr_pdd.commands.figures import FigureError
from kdsr_pdd.logs import load_experiment

TINY = dict(n_feats=8, n_blocks=1, n_encoder_res=1, scale=4)
SIGMAS = [0.5, 1.0, 2.0, 4.0]


def assert_png(path, min_bytes=5000):
    """A readable PNG of a real plot: decent size, and more than a blank canvas."""
    assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and path.stat().st_size > min_bytes
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None and min(img.shape[:2]) > 300
    assert (img < 200).any(axis=2).mean() > 0.01  # ink: axes, labels, points


class HighFrequencyEncoder(torch.nn.Module):
    """Stub student encoder: IDR = e * (1, 2, 3, 4), e = energy of the LR minus its 3x3 mean; blur lowers e."""

    def __init__(self, weights=(1.0, 2.0, 3.0, 4.0)):
        super().__init__()
        self.register_buffer('weights', torch.tensor(weights))

    def encode(self, lq):
        energy = (lq - F.avg_pool2d(lq, 3, 1, 1, count_include_pad=False)).pow(2).mean(dim=(1, 2, 3))
        idr = energy[:, None] * self.weights
        return idr, idr


@pytest.fixture(scope='module')
def hr_folder(tmp_path_factory):
    """Two small HR images of different sizes (not multiples of 4), smooth content plus texture."""
    folder = tmp_path_factory.mktemp('hr')
    rng = np.random.default_rng(0)
    for name, (h, w) in (('b.png', (45, 50)), ('a.png', (38, 41))):
        yy, xx = np.mgrid[0:h, 0:w]
        base = 127 + 80 * np.sin(xx / 5.0)[..., None] * np.cos(yy / 7.0)[..., None] * np.array([1.0, 0.6, 0.3])
        cv2.imwrite(str(folder / name), np.clip(base + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8))
    return folder


def centre_crop_rgb(path, crop):
    """RGB [3, crop, crop] in [0, 1]: the image cut to a multiple of 4 (top-left part), then its centre."""
    img = cv2.imread(str(path))
    h, w = img.shape[0] // 4 * 4, img.shape[1] // 4 * 4
    top, left = (h - crop) // 2, (w - crop) // 2
    img = img[top:top + crop, left:left + crop, ::-1].astype(np.float32) / 255.
    return torch.from_numpy(img.copy()).permute(2, 0, 1)


@torch.no_grad()
def oracle_idrs(net, images, sigmas):
    """IDRs one LR at a time, made with ClassicDegradation.degrade and the network's own encoder."""
    degradation = ClassicDegradation(scale=4)
    rows = []
    for hr in images:
        for sigma in sigmas:
            lq = degradation.degrade(hr[None], isotropic_gaussian_kernels(torch.tensor([sigma])))
            rows.append((net.encode(lq, hr[None]) if isinstance(net, KDSRTeacher) else net.encode(lq))[1][0])
    return torch.stack(rows).double().numpy()


def save_tiny(net_class, path, seed):
    torch.manual_seed(seed)
    net = net_class(**TINY).eval()
    torch.save({'params': net.state_dict()}, path)
    return net


# ------------------------------------------------------------------------------------ statistics
def test_spearman_and_ranks_match_scipy_and_hand_values():
    assert figures.spearman_rho([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)  # 1 - 6*4/(5*24)
    x = np.array([0.5, 1.0, 1.0, 2.0, 2.0, 2.0, 4.0, 0.5])
    y = np.array([3.0, 1.0, 2.5, 2.5, -1.0, 7.0, 0.0, 3.0])
    assert figures.spearman_rho(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert figures.spearman_rho(x, -2 * x + 1) == pytest.approx(-1.0)
    with pytest.raises(FigureError, match='constant'):
        figures.spearman_rho(x, np.ones_like(x))


def test_pca_matches_covariance_eigenvectors():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 6)) @ np.diag([5.0, 2.0, 0.5, 0.3, 0.2, 0.1]) @ np.linalg.qr(rng.normal(size=(6, 6)))[0]
    values, vectors = np.linalg.eigh(np.cov(x, rowvar=False))
    top = vectors[:, ::-1][:, :2]
    top *= np.sign(top[np.abs(top).argmax(axis=0), [0, 1]])  # largest loading positive, as documented
    scores = figures.pca_2d(x)
    np.testing.assert_allclose(scores, (x - x.mean(axis=0)) @ top, atol=1e-9)
    np.testing.assert_allclose(scores.var(axis=0, ddof=1), values[::-1][:2], rtol=1e-9)
    two = figures.pca_2d(x[:2])  # two samples vary along one direction only
    np.testing.assert_allclose(two, [[np.linalg.norm(x[0] - x[1]) / 2, 0], [-np.linalg.norm(x[0] - x[1]) / 2, 0]],
                               atol=1e-9)
    np.testing.assert_allclose(figures.pca_2d(x[:, :1]), np.c_[x[:, 0] - x[:, 0].mean(), np.zeros(40)], atol=1e-12)


def test_monotone_stub_encoder_gives_rho_one():
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 64, 64, generator=g) for _ in range(2)]  # white noise: e hardly depends on content
    sigmas = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0]
    result = figures.idr_sigma_spearman(HighFrequencyEncoder(), images, sigmas, scale=4)
    assert result.abs_rho == 1.0 and result.sign == -1  # more blur, less energy
    energy = figures.compute_idrs(HighFrequencyEncoder(), images, sigmas, 4).idrs[:, 0]
    pooled = stats.spearmanr(np.tile(sigmas, 2), energy).statistic
    assert result.pooled_rho == pytest.approx(pooled) and -1 < pooled < -0.95  # below 1: sigma has ties
    # PC1 is oriented by its largest loading: negating the IDR makes that loading -4, so PC1 ~ -e
    assert figures.idr_sigma_spearman(HighFrequencyEncoder((-1.0, -2.0, -3.0, -4.0)), images, sigmas, 4).sign == 1
    assert figures.idr_sigma_spearman(HighFrequencyEncoder((4.0, 3.0, -2.0, 1.0)), images, sigmas, 4).sign == -1
    with pytest.raises(FigureError, match='constant'):
        figures.idr_sigma_spearman(HighFrequencyEncoder((0.0, 0.0, 0.0, 0.0)), images, sigmas, 4)


def test_tiny_student_spearman_matches_oracle(hr_folder, tmp_path):
    net = save_tiny(KDSRStudent, tmp_path / 's.pth', seed=3)
    images = [centre_crop_rgb(hr_folder / n, 32) for n in ('a.png', 'b.png')]
    expected = oracle_idrs(net, images, SIGMAS)
    samples = figures.compute_idrs(net, images, SIGMAS, 4)
    np.testing.assert_allclose(samples.idrs, expected, rtol=1e-4, atol=1e-6)
    centred = expected - expected.mean(axis=0)
    pc1 = centred @ np.linalg.eigh(centred.T @ centred)[1][:, -1]
    per_image = [stats.spearmanr(SIGMAS, pc1[i * 4:(i + 1) * 4]).statistic for i in range(2)]
    result = figures.idr_sigma_spearman(net, images, SIGMAS, 4)
    assert result.abs_rho == pytest.approx(abs(np.mean(per_image)))
    assert abs(result.pooled_rho) == pytest.approx(abs(stats.spearmanr(np.tile(SIGMAS, 2), pc1).statistic))


def test_tsne_needs_scikit_learn():
    x = np.random.default_rng(0).normal(size=(12, 8))
    try:
        import sklearn  # noqa: F401
    except ImportError:
        with pytest.raises(FigureError, match='scikit-learn'):
            figures.tsne_2d(x)
    else:
        assert figures.tsne_2d(x).shape == (12, 2)


# ------------------------------------------------------------------------------------------ CLI
def test_idr_figure_of_a_student_checkpoint(hr_folder, tmp_path, capsys):
    net = save_tiny(KDSRStudent, tmp_path / 'student.pth', seed=1)
    out, table = tmp_path / 'fig' / 'idr.png', tmp_path / 'idrs.csv'
    figures.main(['idr', '--model', str(tmp_path / 'student.pth'), '--arch', 'KDSRStudent', '--arch-args',
                  json.dumps(TINY), '--hr', str(hr_folder), '--scale', '4', '--sigmas'] + [str(s) for s in SIGMAS]
                 + ['--crop', '32', '--out', str(out), '--csv', str(table)])
    assert_png(out)
    assert 'Spearman rho(sigma, PC1 of the IDR)' in capsys.readouterr().out
    with open(table, newline='') as f:
        rows = list(csv.reader(f))
    assert rows[0][:4] == ['image', 'sigma', 'x', 'y'] and len(rows[0]) == 4 + 4 * TINY['n_feats']
    assert [r[0] for r in rows[1:]] == ['a.png'] * 4 + ['b.png'] * 4
    assert [float(r[1]) for r in rows[1:]] == SIGMAS * 2
    idrs = np.array([[float(v) for v in r[4:]] for r in rows[1:]])
    expected = oracle_idrs(net, [centre_crop_rgb(hr_folder / n, 32) for n in ('a.png', 'b.png')], SIGMAS)
    np.testing.assert_allclose(idrs, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose([[float(r[2]), float(r[3])] for r in rows[1:]], figures.pca_2d(idrs), atol=1e-6)


def test_idr_figure_of_a_teacher_from_its_option_file(hr_folder, tmp_path):
    net = save_tiny(KDSRTeacher, tmp_path / 'teacher.pth', seed=2)
    opt = tmp_path / 'teacher.yml'
    opt.write_text(yaml.safe_dump({'name': 't', 'network_g': dict(type='KDSRTeacher', **TINY)}))
    out, table = tmp_path / 'teacher.png', tmp_path / 'teacher.csv'
    figures.main(['idr', '--model', str(tmp_path / 'teacher.pth'), '--opt', str(opt), '--hr', str(hr_folder),
                  '--sigmas', '1', '3', '--max-images', '1', '--out', str(out), '--csv', str(table)])
    assert_png(out)
    with open(table, newline='') as f:
        rows = list(csv.reader(f))[1:]
    img = cv2.imread(str(hr_folder / 'a.png'))[:36, :40, ::-1].astype(np.float32) / 255.  # mod crop to x4
    hr = torch.from_numpy(img.copy()).permute(2, 0, 1)
    np.testing.assert_allclose([[float(v) for v in r[4:]] for r in rows], oracle_idrs(net, [hr], [1.0, 3.0]),
                               rtol=1e-4, atol=1e-6)


def test_idr_errors(hr_folder, tmp_path):
    save_tiny(KDSRStudent, tmp_path / 's.pth', seed=0)
    base = ['idr', '--model', str(tmp_path / 's.pth'), '--arch', 'KDSRStudent', '--arch-args', json.dumps(TINY),
            '--out', str(tmp_path / 'x.png')]
    with pytest.raises(SystemExit, match=r'--crop 30 must be a positive multiple of the scale 4'):
        figures.main(base + ['--hr', str(hr_folder), '--crop', '30'])
    with pytest.raises(SystemExit, match=r'a.png is 36x40, smaller than --crop 40'):
        figures.main(base + ['--hr', str(hr_folder), '--crop', '40'])
    with pytest.raises(SystemExit, match=r'--hr: HR folder not found'):
        figures.main(base + ['--hr', str(tmp_path / 'nope')])
    with pytest.raises(SystemExit, match=r'--scale 2 differs from the network scale 4'):
        figures.main(base + ['--hr', str(hr_folder), '--scale', '2'])
    with pytest.raises(SystemExit, match=r"network type 'RRDBNet' has no IDR"):
        figures.main(['idr', '--model', str(tmp_path / 's.pth'), '--arch', 'realesrgan-x4', '--hr', str(hr_folder),
                      '--out', str(tmp_path / 'x.png')])


def test_scatter_of_three_experiments(tmp_path):
    folders = [make_test_results(tmp_path / 'results', name, blocks) for name, blocks in RESULTS.items()]
    out = tmp_path / 'pd.png'
    figures.main(['scatter'] + [str(p) for p in folders] + ['--x', 'psnr', '--y', 'lpips', '--dataset', 'Set14',
                                                          '--out', str(out)])
    assert_png(out)
    experiments = [load_experiment(p) for p in folders]
    dataset, points = figures.scatter_points(experiments, 'psnr', 'lpips', 'Set14')
    assert dataset == 'Set14' and points == [('expA', 26.5011, 0.3), ('expB', 26.4, 0.295), ('expC', 26.6, 0.28)]
    with pytest.raises(SystemExit, match='choose one with --dataset'):
        figures.main(['scatter'] + [str(p) for p in folders] + ['--out', str(out)])
    with pytest.raises(SystemExit, match="metric 'niqe' missing for dataset 'Set5'"):
        figures.main(['scatter'] + [str(p) for p in folders] + ['--y', 'niqe', '--dataset', 'Set5', '--out', str(out)])


# ------------------------------------------------------------------------------------------ curves, comparison
def write_training_log(path):
    """A training log as BasicSR's train pipeline writes it: the option dump, MessageLogger lines every 3
    iterations, a validation every 4, "End of training", the final validation."""
    from basicsr.models.base_model import BaseModel
    from basicsr.models.sr_model import SRModel
    from basicsr.utils import MessageLogger
    from basicsr.utils.options import dict2str
    from test_tables import basicsr_log_file

    opt = {'name': 'curve', 'train': {'total_iter': 8}, 'logger': {'print_freq': 3, 'use_tb_logger': False},
           'val': {'val_freq': 4, 'metrics': {'psnr': {'type': 'calculate_psnr'}}}}
    model = SimpleNamespace(opt=opt)

    def validate(it):
        model.metric_results = {'psnr': 20.0 + it}
        BaseModel._initialize_best_metric_results(model, 'Set5')
        BaseModel._update_best_metric_result(model, 'Set5', 'psnr', 20.0 + it, it)
        SRModel._log_validation_metric_values(model, it, 'Set5', None)

    with basicsr_log_file(path) as logger:
        logger.info(dict2str(opt))
        message = MessageLogger(opt, 0, None)
        for it in range(1, 9):
            if it % 3 == 0:
                message({'epoch': 0, 'iter': it, 'lrs': [1e-3], 'time': 0.1, 'data_time': 0.01, 'l_pix': 1.0 / it,
                         'out_d_real': -0.5})
            if it % 4 == 0:
                validate(it)
        logger.info('End of training. Time consumed: 0:00:01')
        validate(8)
    return path


def test_training_curves_from_a_basicsr_training_log(tmp_path):
    from kdsr_pdd.logs import training_curves

    log = write_training_log(tmp_path / 'train_curve_20261123_154001.log')
    curves = training_curves(log.read_text().splitlines(keepends=True))
    logged = pytest.approx(1 / 3, rel=1e-4), pytest.approx(1 / 6, rel=1e-4)  # BasicSR logs 5 digits
    assert curves.losses['l_pix'] == [(3, logged[0]), (6, logged[1])]
    assert curves.validation == {'Set5 psnr': [(4, 24.0), (8, 28.0), (8, 28.0)]}
    out = tmp_path / 'curves.png'
    figures.main(['curves', str(tmp_path), '--out', str(out)])
    assert_png(out)
    with pytest.raises(SystemExit, match='no such training log'):
        figures.main(['curves', str(tmp_path / 'none'), '--out', str(out)])


def test_side_by_side_comparison_of_a_test_image(tmp_path):
    rng = np.random.default_rng(0)
    for folder, size in (('lq', 8), ('gt', 32), ('a', 32), ('b', 32)):
        (tmp_path / folder).mkdir()
        name = 'img0.png' if folder in ('lq', 'gt') else 'img0_test.png'  # BasicSR's <stem>_<suffix>.png
        cv2.imwrite(str(tmp_path / folder / name), rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    stem, panels = figures.comparison_panels(tmp_path / 'lq', tmp_path / 'gt', [('A', tmp_path / 'a'),
                                                                                ('B', tmp_path / 'b')])
    assert stem == 'img0' and [t for t, _ in panels] == ['LR', 'A', 'B', 'HR']
    assert all(image.shape == (32, 32, 3) for _, image in panels)
    lr = cv2.cvtColor(cv2.imread(str(tmp_path / 'lq' / 'img0.png')), cv2.COLOR_BGR2RGB)
    assert np.array_equal(panels[0][1][::4, ::4], lr)  # the LR, nearest-upscaled
    out = tmp_path / 'compare.png'
    figures.main(['compare', '--lq', str(tmp_path / 'lq'), '--gt', str(tmp_path / 'gt'), '--methods',
                  f'A={tmp_path / "a"}', f'B={tmp_path / "b"}', '--crop', '4,4,16', '--out', str(out)])
    assert_png(out)
    with pytest.raises(SystemExit, match=r'--crop 20,4,16 does not fit the 32x32 image img0'):
        figures.main(['compare', '--lq', str(tmp_path / 'lq'), '--gt', str(tmp_path / 'gt'), '--methods',
                      f'A={tmp_path / "a"}', '--crop', '20,4,16', '--out', str(out)])
    with pytest.raises(SystemExit, match=r"no image for 'img0'"):
        figures.main(['compare', '--lq', str(tmp_path / 'lq'), '--gt', str(tmp_path / 'gt'), '--methods',
                      f'A={tmp_path}', '--out', str(out)])
