"""``kdsr-pdd evidence pdd`` without running it: its option files make the paper's ablation (the adaptations differ
only in what the ablation varies, the tests load what the trainings write), its findings and README on fabricated
results, and its command line."""
import copy

import pytest
from test_tables import make_test_results

from kdsr_pdd.commands import evidence
from kdsr_pdd.recipes import RecipeError
from kdsr_pdd.schema import read_option_file

PSNR_SSIM = {'psnr': dict(type='calculate_psnr', crop_border=4, test_y_channel=True),
             'ssim': dict(type='calculate_ssim', crop_border=4, test_y_channel=True)}
LABELS = [row[0] for row in evidence.PDD_ROWS]
GENERALIST, SPECIALIST, NAIVE, STATIC, EMA = LABELS


def options(name):
    return read_option_file(str(evidence.PDD_OPTIONS / name))


def test_every_training_and_test_names_the_experiment_the_study_reads():
    for _, option_file, name in evidence.PDD_TRAININGS:
        assert options(option_file)['name'] == name, option_file
    for _, _, option_file, name in evidence.PDD_ROWS:
        opt = options(option_file)
        assert opt['name'] == name, option_file
        assert [d['name'] for d in opt['datasets'].values()] == [evidence.TARGET, evidence.SYNTHETIC], option_file


def test_tests_load_the_weights_their_training_saves():
    trained = {f'experiments/{name}/models/net_g_latest.pth': options(option_file)
               for _, option_file, name in evidence.PDD_TRAININGS}
    for _, _, option_file, _ in evidence.PDD_ROWS[1:]:
        path = options(option_file)['path']
        training = trained[path['pretrain_network_g']]  # a checkpoint of one of the study's trainings
        # BasicSR saves params_ema only when train.ema_decay > 0 (the specialist keeps its plain weights)
        assert path['param_key_g'] == ('params_ema' if training['train']['ema_decay'] > 0 else 'params'), option_file
    generalist = options('test_generalist.yml')['path']
    assert (generalist['pretrain_network_g'], generalist['param_key_g']) == \
        ('datasets/demo/RealESRGAN_x4plus.pth', 'params_ema')
    for option_file in ('naive_static.yml', 'pdd_static.yml'):  # students: the specialist, not the generalist
        assert options(option_file)['path']['pretrain_network_g'] == \
            'experiments/evidence_pdd_specialist/models/net_g_latest.pth'


def _without_ablation_differences(opt):
    """The options less what the paper's ablation varies: student, reference, unsupervised term, name."""
    opt = copy.deepcopy(opt)
    del opt['name']
    opt.pop('network_reference', None)
    opt['path'] = {k: v for k, v in opt['path'].items() if not k.endswith(('_g', '_reference'))
                   and k != 'ignore_resume_networks'}
    for key in ('reference', 'distill_opt', 'distill_warmup_iters', 'distill_detach_syn'):
        opt['train'].pop(key, None)
    return opt


def test_the_three_adaptations_share_data_losses_and_length():
    naive, static, ema = (options(f) for f in ('naive_static.yml', 'pdd_static.yml', 'pdd_ema.yml'))
    assert _without_ablation_differences(naive) == _without_ablation_differences(static) == \
        _without_ablation_differences(ema)
    assert naive['train']['distill_opt']['type'] == 'NaiveDistillationLoss'
    assert static['train']['distill_opt'] == ema['train']['distill_opt']
    assert static['train']['distill_opt']['type'] == 'PairwiseDistanceDistillationLoss'
    assert (static['train']['reference'], static['train']['distill_detach_syn']) == ('static', True)
    assert (ema['train']['reference'], ema['train']['distill_detach_syn']) == ('ema', False)


def fabricated_results(specialist_synthetic, specialist_target):
    """``{row: {dataset: {psnr, ssim}}}``: the generalist at 25 dB on both domains, the specialist at the given
    PSNRs; the adaptations at fixed values."""
    def row(target, synthetic):
        return {evidence.TARGET: {'psnr': target, 'ssim': 0.7}, evidence.SYNTHETIC: {'psnr': synthetic, 'ssim': 0.7}}
    return {GENERALIST: row(25.0, 25.0), SPECIALIST: row(specialist_target, specialist_synthetic),
            NAIVE: row(25.5, 26.0), STATIC: row(24.0, 26.0), EMA: row(25.25, 25.0)}


def test_specialist_finding_as_the_paper_assumes():
    lines = evidence._specialist_finding(fabricated_results(26.0, 24.5))
    assert lines[0] == '- synthetic (bicubic) domain: the specialist is better than the generalist by 1.00 dB PSNR ' \
        '(+0.0000 SSIM).'
    assert lines[1] == '- target (camera-like) domain: the specialist is worse than the generalist by 0.50 dB PSNR ' \
        '(+0.0000 SSIM).'
    assert lines[-1].startswith('As the paper assumes')


def test_specialist_finding_otherwise():
    better_on_both = evidence._specialist_finding(fabricated_results(26.0, 25.5))
    assert 'better than the generalist by 0.50 dB' in better_on_both[1]
    assert better_on_both[-1].startswith("Not the paper's premise") and 'better on both domains' in better_on_both[-1]
    not_a_specialist = evidence._specialist_finding(fabricated_results(24.0, 24.0))
    assert 'worse than the generalist by 1.00 dB' in not_a_specialist[0]
    assert not_a_specialist[-1].startswith('Not even a specialist')


def test_adaptation_findings_against_the_generalist_and_their_start():
    lines = evidence._adaptation_findings(fabricated_results(26.0, 24.5))
    rows = {line.split(' | ')[0].lstrip('| '): line for line in lines if line.startswith('| ') and 'dB' in line}
    assert rows[NAIVE] == f'| {NAIVE} | {SPECIALIST} | +0.50 dB / +0.0000 | +1.00 dB / +0.0000 | +1.00 dB / +0.0000 |'
    assert rows[STATIC].split(' | ')[2:4] == ['-1.00 dB / +0.0000', '-0.50 dB / +0.0000']
    assert rows[EMA].split(' | ')[1:3] == [GENERALIST, '+0.25 dB / +0.0000']  # PDD-EMA starts from the generalist
    assert lines[-1].startswith(f'On the target domain {NAIVE} and {EMA} are above the generalist in PSNR.')


class FakeRecipe:
    def __init__(self, report_dir):
        self.report_dir = str(report_dir)

    def environment(self):
        return ['- threads: 1 (OMP_NUM_THREADS of every step)']

    def time_summary(self):
        return '3 steps, 1 min 02.0 s wall, 1 min 01.0 s CPU (user + system)'


def test_readme_from_fabricated_logs(tmp_path, monkeypatch):
    results = fabricated_results(26.0, 25.5)
    for label, _, _, name in evidence.PDD_ROWS:
        make_test_results(tmp_path / 'results', name, list(results[label].items()), PSNR_SSIM)
    report = tmp_path / 'results' / 'evidence_pdd'
    report.mkdir()
    (report / f'{evidence.PDD_TABLE}.md').write_text('| Method | target_domain PSNR |\n|:--|--:|\n| x | 1 |\n')
    lengths = ['| Training | Iterations |', '|:--|--:|', '| Specialist | 100 |']
    monkeypatch.setattr(evidence, '_training_lengths', lambda workdir: lengths)
    evidence._write_pdd_readme(FakeRecipe(report), str(tmp_path), vgg_stand_in=True)
    readme = (report / 'README.md').read_text()
    assert '| x | 1 |' in readme and '| Specialist | 100 |' in readme
    assert 'the specialist is better than the generalist by 0.50 dB PSNR' in readme
    assert 'random-weight VGG19 features' in readme and 'the PDD rows are not what real weights would give' in readme
    assert '- threads: 1' in readme and '1 min 02.0 s wall' in readme
    assert '16 held-out 128x128 crops' in readme and '- `pdd_ablation.md`' in readme
    evidence._write_pdd_readme(FakeRecipe(report), str(tmp_path), vgg_stand_in=False)
    assert 'random-weight' not in (report / 'README.md').read_text()


@pytest.mark.parametrize('argv, message', [
    (['nonsense'], "invalid choice: 'nonsense'"),
    (['pdd', '--threads', '0'], 'expected a positive integer, got 0'),
    (['pdd', '--iters', 'x'], "expected a positive integer, got 'x'"),
    ([], 'the following arguments are required: STUDY'),
])
def test_command_line_errors_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        evidence.main(argv)
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith('kdsr-pdd evidence')]
    assert len(errors) == 1 and message in errors[0], errors


def test_a_failing_step_is_one_line(monkeypatch, tmp_path):
    def fails(workdir, threads, iters):
        assert (workdir, threads, iters) == (str(tmp_path), 1, 3)
        raise RecipeError('step 2 failed (exit 1): kdsr-pdd train ...; its output: steps/02_train.log')
    monkeypatch.setitem(evidence.STUDIES, 'pdd', (evidence.STUDIES['pdd'][0], fails))
    with pytest.raises(SystemExit, match=r'^error: evidence pdd: step 2 failed \(exit 1\): kdsr-pdd train \.\.\.; '
                       r'its output: steps/02_train.log$'):
        evidence.main(['pdd', '--workdir', str(tmp_path), '--threads', '1', '--iters', '3'])


def test_shortened_pdd_ema_training_still_distils(tmp_path):
    from kdsr_pdd.recipes import length_overrides

    option_file = tmp_path / 'ema.yml'
    option_file.write_text('train:\n  total_iter: 100\n  net_d_init_iters: 5\n  distill_warmup_iters: 5\n')
    force = length_overrides(20, option_file)
    assert force[0] == '--force_yml'
    assert {'train:total_iter=20', 'train:net_d_init_iters=5', 'train:distill_warmup_iters=5'} <= set(force[1:])
    assert length_overrides(None, option_file) == []
