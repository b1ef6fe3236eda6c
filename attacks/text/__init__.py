"""Text attacks (text data: the robustness section's ``text`` block, docs/text-attacks.md).

- ``base``: words of a text, the query-counting victim, the constraints, word importance and the greedy search;
- ``charedit``: DeepWordBug (character edits); ``wordnet``: WordNet synonym substitution (offline);
  ``hotflip``: gradient-guided token flips; ``embedding``: embedding-space PGD, reported only as a bound;
- ``evaluate``: every attack over the samples and the worst case; ``run``: the section's text path and records.

Attacks register in the ``nnaudit.text_attacks`` entry-point group.
"""
