"""The figures the commands draw (matplotlib's object API on the Agg canvas: no display needed; imported lazily)."""
import numpy as np


def new_figure(size=(5.0, 4.0), rows=1, cols=1):
    """``(figure, axes)`` with a constrained layout."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=size, layout='constrained')
    return fig, fig.subplots(rows, cols)


def plot_scatter(points, x_title, y_title, title, out):
    """Labelled points ``[(label, x, y), ...]`` saved to ``out`` (format from the suffix)."""
    fig, ax = new_figure()
    ax.scatter([p[1] for p in points], [p[2] for p in points], s=36, zorder=3)
    for label, x, y in points:
        ax.annotate(label, (x, y), textcoords='offset points', xytext=(5, 5), fontsize=8)
    ax.set_xlabel(x_title)
    ax.set_ylabel(y_title)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.margins(0.15)
    fig.savefig(out, dpi=150)


def plot_embedding(points, colours, colour_title, title, out, axis='PC', markers=None):
    """Scatter ``points`` [N, 2] coloured by ``colours`` [N] (colourbar ``colour_title``); ``markers`` [N] of group
    indices (e.g. the photo of each point) draws each group with its own marker and a legend entry."""
    fig, ax = new_figure((5.5, 4.5))
    shapes = 'o^sDvP*Xh<>p'
    groups = [(None, np.ones(len(points), bool))] if markers is None else [
        (name, np.asarray(markers[1]) == i) for i, name in enumerate(markers[0])]
    dots = None
    for k, (name, rows) in enumerate(groups):
        dots = ax.scatter(points[rows, 0], points[rows, 1], c=np.asarray(colours)[rows], cmap='viridis', s=22,
                          marker=shapes[k % len(shapes)], edgecolors='none', label=name,
                          vmin=float(np.min(colours)), vmax=float(np.max(colours)))
    fig.colorbar(dots, ax=ax, label=colour_title)
    if markers is not None:
        ax.legend(fontsize=7, markerscale=0.8, loc='best')
    ax.set_xlabel(f'{axis}1')
    ax.set_ylabel(f'{axis}2')
    ax.set_title(title)
    fig.savefig(out, dpi=150)


def plot_curves(runs, out):
    """Training curves: ``runs`` is ``[(label, Curves)]`` (:class:`kdsr_pdd.logs.Curves`). The losses (``l_*``)
    share the first panel (log scale where positive); each validation metric gets a panel of its own, all against
    the iteration. Few points are drawn with markers."""
    metrics = sorted({name.rsplit(' ', 1)[-1] for _, curves in runs for name in curves.validation})
    fig, axes = new_figure((4.5 * (1 + len(metrics)), 3.8), 1, 1 + len(metrics))
    axes = np.atleast_1d(axes)
    for label, curves in runs:
        prefix = f'{label}: ' if len(runs) > 1 else ''
        for name, points in curves.losses.items():
            if name.startswith('l_'):
                axes[0].plot(*zip(*points), label=prefix + name, linewidth=1, marker='o' if len(points) < 20 else None,
                             markersize=3)
        for name, points in curves.validation.items():
            dataset, metric = name.rsplit(' ', 1)
            axes[1 + metrics.index(metric)].plot(*zip(*points), marker='o', markersize=3, linewidth=1,
                                                 label=prefix + dataset)
    positive = [v for _, c in runs for n, p in c.losses.items() if n.startswith('l_') for _, v in p]
    if positive and min(positive) > 0:
        axes[0].set_yscale('log')
    for ax, title in zip(axes, ['training losses'] + [f'validation {m}' for m in metrics]):
        ax.set_xlabel('iteration')
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.savefig(out, dpi=150)


def plot_comparison(panels, out, zoom_box=None):
    """Side-by-side images: ``panels`` is ``[(title, RGB uint8 [H, W, 3])]`` of one size (the LR upscaled for
    display); ``zoom_box`` (top, left, size) in their pixels is outlined on the first panel and shown enlarged
    in a second row."""
    rows = 2 if zoom_box else 1
    fig, axes = new_figure((2.6 * len(panels), 2.8 * rows), rows, len(panels))
    axes = np.asarray(axes).reshape(rows, len(panels))
    for j, (title, image) in enumerate(panels):
        axes[0, j].imshow(image, interpolation='nearest')
        axes[0, j].set_title(title, fontsize=9)
        if zoom_box:
            top, left, size = zoom_box
            axes[1, j].imshow(image[top:top + size, left:left + size], interpolation='nearest')
            if j == 0:
                from matplotlib.patches import Rectangle
                axes[0, 0].add_patch(Rectangle((left - 0.5, top - 0.5), size, size, fill=False, color='red',
                                               linewidth=1))
    for ax in axes.flat:
        ax.set_axis_off()
    fig.savefig(out, dpi=150)
