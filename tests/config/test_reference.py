"""docs/configuration.md is generated from the sections' dataclasses: it must be current, and every key explained."""

import dataclasses
import os
import typing

from ol_ray.config import Config, DomainConfig
from ol_ray.config.reference import field_comments, reference

from conftest import ROOT


def test_configuration_reference_is_current():
    with open(os.path.join(ROOT, "docs", "configuration.md"), encoding="utf-8") as handle:
        assert handle.read() == reference(), "docs/configuration.md is stale: python -m ol_ray.config.reference " \
                                             "docs/configuration.md"


def test_every_key_has_a_comment():
    sections = [typing.get_type_hints(Config)[f.name] for f in dataclasses.fields(Config)] + [DomainConfig]
    for cls in sections:
        comments = field_comments(cls)
        for field in dataclasses.fields(cls):
            assert comments.get(field.name, "").strip(), f"{cls.__name__}.{field.name} has no comment"


def test_every_key_is_in_the_reference():
    text = reference()
    for section in dataclasses.fields(Config):
        for key in dataclasses.fields(typing.get_type_hints(Config)[section.name]):
            assert f"`{section.name}.{key.name}`" in text
