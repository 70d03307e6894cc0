"""A gradient-free reference for the text track: guess the public split's most frequent words.

An attack's text scores mean little without the score of an attacker who ignores the update:
ROUGE-1 counts unigram overlap in any order, so a fixed bag of common words ("the", ".",
"of", …) already overlaps every sentence. This guess is that attacker (the text analogue of
reporting a prior-only baseline beside an inversion): it never reads the observed update,
only the public split (``public_data``: the held-out sentences, disjoint from every private
one), and returns for every private sequence the same ``seq_len`` tokens — the most frequent
non-padding tokens of the public sequences, in the order of their mean position there — and,
for classification, the public split's most frequent label. A gradient attack that does not
beat it on a scenario has recovered nothing a frequency table does not give.
"""

from __future__ import annotations

import torch

from bench.contracts import Attack, Observation, Reconstruction
from bench.grants import PUBLIC_DATA
from bench.registry import register_attack

PAD_ID = 0  # bench.textcorpus: [PAD] is id 0


def frequent_guess(public_ids: torch.Tensor, length: int) -> torch.Tensor:
    """The ``length`` most frequent non-[PAD] ids of ``public_ids`` (N×L; ties: the lower
    id), ordered by their mean position in the sequences (ties: the lower id), [PAD]-filled
    where fewer distinct tokens occur."""
    ids = public_ids.reshape(-1)
    positions = torch.arange(public_ids.shape[1]).repeat(public_ids.shape[0])
    real = ids != PAD_ID
    ids, positions = ids[real], positions[real]
    if ids.numel() == 0:
        return torch.full((length,), PAD_ID, dtype=torch.long)
    size = int(ids.max()) + 1
    counts = torch.bincount(ids, minlength=size)
    mean_position = torch.bincount(ids, weights=positions.double(), minlength=size) / \
        counts.clamp(min=1)
    present = [t for t in range(size) if counts[t] > 0]
    chosen = sorted(present, key=lambda t: (-int(counts[t]), t))[:length]
    ordered = sorted(chosen, key=lambda t: (float(mean_position[t]), t))
    return torch.tensor(ordered + [PAD_ID] * (length - len(ordered)), dtype=torch.long)


def majority_label(labels: torch.Tensor) -> int:
    """The most frequent label (ties: the lower label)."""
    counts = torch.bincount(labels.reshape(-1))
    return int(counts.argmax())  # argmax returns the first maximum


@register_attack("frequent_words")
class FrequentWords(Attack):
    """The public split's most frequent words as every sentence: a gradient-free reference
    row for the text tables (it never reads the update)."""

    paper = "baseline: the most frequent public words, no gradient"
    modalities = frozenset({"text"})
    needs = frozenset({PUBLIC_DATA})
    update_kinds = frozenset({"gradient", "delta"})  # it reads neither
    reference = True

    def reconstruct(self, obs: Observation) -> Reconstruction:
        public = obs.grant(PUBLIC_DATA)
        if public is None:
            raise ValueError("frequent_words needs the public_data grant")
        if public.images.shape[0] == 0:  # a text folder whose held-out sentences all repeat
            raise ValueError("frequent_words: the public split holds no sentence to count")
        length = obs.input_shape[0]
        guess = frequent_guess(public.images, length)
        data = guess.unsqueeze(0).repeat(obs.batch_size, 1)
        lm = getattr(obs.domain, "task", "lm") == "lm"
        labels = None if lm else torch.full((obs.batch_size,), majority_label(public.labels),
                                            dtype=torch.long)
        return Reconstruction(data=data, labels=labels, iterations=0, grad_evals=0,
                              info={"diverged": False, "stop_reason": "gradient-free guess",
                                    "public_sequences": int(public.images.shape[0])})
