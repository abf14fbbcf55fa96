"""Low-rank matrices kept as a product of two factors, ``M = A B``.

The framework's circuits are products such as ``W_U W_O W_V W_E``: ``d_vocab × d_vocab`` but
of rank at most ``d_head``. Keeping the two factors makes products, norms, singular values and
eigenvalues cost ``O((m + n) r²)`` instead of ``O(m n)`` memory and more time.
"""

from __future__ import annotations

import torch


class FactoredMatrix:
    """The matrix ``A @ B`` with ``A: (..., m, r)`` and ``B: (..., r, n)``, never materialised.

    Leading dimensions (e.g. ``(n_layers, n_heads)``) broadcast as in ``torch.matmul``, and
    indexing with ``[...]`` selects along them: ``M[layer, head]``.
    """

    def __init__(self, A: torch.Tensor, B: torch.Tensor) -> None:
        if A.ndim < 2 or B.ndim < 2:
            raise ValueError(
                f"A and B must be at least 2-D, got shapes {tuple(A.shape)} and {tuple(B.shape)}"
            )
        if A.shape[-1] != B.shape[-2]:
            raise ValueError(f"A's columns ({A.shape[-1]}) must match B's rows ({B.shape[-2]})")
        self.A, self.B = A, B

    @property
    def shape(self) -> torch.Size:
        """``(..., m, n)``."""
        batch = torch.broadcast_shapes(self.A.shape[:-2], self.B.shape[:-2])
        return torch.Size((*batch, self.A.shape[-2], self.B.shape[-1]))

    @property
    def rank(self) -> int:
        """The inner dimension ``r``, an upper bound on the rank."""
        return self.A.shape[-1]

    @property
    def T(self) -> FactoredMatrix:
        """The transpose ``Bᵀ Aᵀ``, shaped ``(..., n, m)``."""
        return FactoredMatrix(self.B.transpose(-1, -2), self.A.transpose(-1, -2))

    def __getitem__(self, index: int | slice | tuple) -> FactoredMatrix:
        """Select along the leading dimensions (both factors must carry them)."""
        return FactoredMatrix(self.A[index], self.B[index])

    def __matmul__(self, other: torch.Tensor | FactoredMatrix) -> FactoredMatrix:
        """``self @ other`` for a tensor ``(..., n, k)`` or a factored matrix, kept factored.

        The inner dimension of the result is the smaller of the two operands' ranks.
        """
        if isinstance(other, FactoredMatrix):
            middle = self.B @ other.A
            if other.rank < self.rank:
                return FactoredMatrix(self.A @ middle, other.B)
            return FactoredMatrix(self.A, middle @ other.B)
        return FactoredMatrix(self.A, self.B @ other)

    def __rmatmul__(self, other: torch.Tensor) -> FactoredMatrix:
        """``other @ self`` for a tensor ``(..., k, m)``."""
        return FactoredMatrix(other @ self.A, self.B)

    def product(self) -> torch.Tensor:
        """The materialised matrix ``(..., m, n)``."""
        return self.A @ self.B

    def svd(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Thin SVD ``U diag(S) Vh`` from QR decompositions of the factors.

        Returns:
            ``U (..., m, k)``, ``S (..., k)`` (descending) and ``Vh (..., k, n)`` with
            ``k = min(m, n, r)``.
        """
        q_left, r_left = torch.linalg.qr(self.A)
        q_right, r_right = torch.linalg.qr(self.B.transpose(-1, -2))
        u_core, singular, vh_core = torch.linalg.svd(
            r_left @ r_right.transpose(-1, -2), full_matrices=False
        )
        return q_left @ u_core, singular, vh_core @ q_right.transpose(-1, -2)

    def singular_values(self) -> torch.Tensor:
        """Singular values ``(..., min(m, n, r))`` in descending order."""
        return self.svd()[1]

    def eigenvalues(self) -> torch.Tensor:
        """The ``r`` eigenvalues of ``B A`` (complex, ``(..., r)``).

        For a square ``A B`` these are its eigenvalues apart from ``m - r`` extra zeros
        (``A B`` and ``B A`` share their nonzero spectrum).
        """
        if self.A.shape[-2] != self.B.shape[-1]:
            raise ValueError(f"eigenvalues need a square matrix, got shape {tuple(self.shape)}")
        return torch.linalg.eigvals(self.B @ self.A)

    def frobenius_norm(self) -> torch.Tensor:
        """``‖A B‖_F = sqrt(tr((AᵀA)(B Bᵀ)))``, shaped ``(...)``."""
        gram_left = self.A.transpose(-1, -2) @ self.A
        gram_right = self.B @ self.B.transpose(-1, -2)
        return (gram_left * gram_right).sum(dim=(-1, -2)).clamp_min(0).sqrt()
