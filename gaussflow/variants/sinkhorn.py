r"""Sinkhorn self-attention: the kernel $e^{\beta\langle Q x, K y\rangle / \varepsilon}$ made
doubly stochastic."""

from ..attention import Attention, SinkhornNormalisation
from ..attention.symbols import dot_score, eps


class Sinkhorn(Attention):
    r"""Sinkhorn attention (Sinkformers): weights $\pi(x, y) / \mu(x)$ where
    $\pi = a(x)\, b(y)\, e^{\beta \langle Q x, K y\rangle / \varepsilon} \mu(x) \mu(y)$ has both
    marginals equal to $\mu$.

    `Sinkhorn(Q, K, V, W_O=None, *, beta=1.0, eps=1.0)`: score $\beta \langle Q x, K y\rangle$
    ($A = K^\top Q$), entropic regularisation $\varepsilon > 0$ (only $\beta / \varepsilon$
    matters), value map $y \mapsto W_O V y$. Exact Gaussian closure: the coupling of
    $N(\alpha, \Sigma)$ is Gaussian with cross-covariance $C = \operatorname{Cov}(X, Y)$ solving
    the Schrödinger system in closed form with symmetric PSD square roots;
    $\Gamma(x) = W_O V (\alpha + C^\top \Sigma^{-1} (x - \alpha))$, written without
    $\Sigma^{-1}$; $\mathrm{d}\alpha/\mathrm{d}t = W_O V \alpha$,
    $\mathrm{d}\Sigma/\mathrm{d}t = W_O V C^\top + C (W_O V)^\top$.
    As $\beta/\varepsilon \to 0$ it tends to softmax at score scale $\beta/\varepsilon$ (up to
    the mean term).
    """

    name = "sinkhorn"
    score = dot_score / eps
    normalisation = SinkhornNormalisation()
    defaults = {"W_O": "identity", "epsilon": 1.0}
    keywords = {"epsilon": "eps"}
