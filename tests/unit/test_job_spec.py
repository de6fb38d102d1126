"""JobSpec's idempotency key: ledgers and providers hold these keys, so a given spec's key never changes."""

from __future__ import annotations

from dataclasses import replace

from ftflow.providers.base import JobSpec

SPEC = JobSpec(model="gpt-4o-mini-2024-07-18", training_file="file-a", validation_file=None,
               dataset_sha256="ab" * 32, suffix="ftflow", hyperparameters={"n_epochs": 3})
# The keys earlier versions of ftflow computed for SPEC: existing ledgers and providers hold them.
KEY = "aa5a672c71b550b77aee080c16b472471a876acf"
KEY_OF_GENERATION_1 = "24240d0bb115aabb37c8bd4637bb26e1ee70018c"


def test_the_key_of_a_spec_is_the_one_existing_ledgers_hold():
    assert SPEC.key == SPEC.family == SPEC.key_of(0) == KEY
    dpo = JobSpec(model="gpt-4.1-mini-2025-04-14", training_file="file-b", validation_file="file-v",
                  dataset_sha256="ab" * 32, method="dpo", hyperparameters={"n_epochs": 2, "beta": 0.1}, seed=7,
                  generation=1)
    assert (dpo.family, dpo.key) == ("72b1281a426b6036be4224aaa332b74dde3363a8",
                                     "cd61c310bb3481b037a17e34311c95a3bf331786")


def test_a_later_generation_has_its_own_key_in_the_same_family():
    first, second = replace(SPEC, generation=1), replace(SPEC, generation=2)
    assert first.key == SPEC.key_of(1) == KEY_OF_GENERATION_1
    assert len({SPEC.key, first.key, second.key}) == 3
    assert first.family == second.family == KEY


def test_the_key_covers_what_is_trained_not_the_file_ids_or_the_seed():
    assert replace(SPEC, training_file="file-other", validation_file="file-v", seed=1).key == KEY
    for changed in (replace(SPEC, dataset_sha256="cd" * 32), replace(SPEC, model="gpt-4.1-mini-2025-04-14"),
                    replace(SPEC, method="dpo"), replace(SPEC, hyperparameters={"n_epochs": 2}),
                    replace(SPEC, suffix=None)):
        assert changed.key != KEY
