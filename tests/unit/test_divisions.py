from __future__ import annotations

from collections import Counter

import pytest

from tenants.divisions import divisions, org_department, province_codes
from tenants.service import division_code


def test_all_counts_match_gb_t_2260_as_of_nov_2025() -> None:
    levels = Counter(d.level for d in divisions())
    assert levels == {"province": 31, "prefecture": 333, "county": 2845}


def test_codes_are_unique_six_digits_with_resolvable_parents() -> None:
    rows = list(divisions())
    codes = {d.code for d in rows}
    assert len(codes) == len(rows)
    assert all(len(c) == 6 and c.isdigit() for c in codes)
    assert all(d.parent_code in codes | {"000000"} for d in rows)


def test_no_hong_kong_macau_or_taiwan_entry() -> None:
    assert not {"81", "82"} & set(province_codes())
    assert all(code.isdigit() for code in province_codes())


@pytest.mark.parametrize(
    ("code", "level", "parent"),
    [
        (
            "110105",
            "county",
            "110000",
        ),  # 北京 朝阳区: a municipality's district, under the province
        ("220104", "county", "220100"),  # 长春 朝阳区: same name, ordinary county under 长春市
        ("419001", "county", "410000"),  # 济源市: province-administered county-level city
        ("429004", "county", "420000"),  # 仙桃市
        ("469021", "county", "460000"),  # 定安县 (Hainan)
        ("441900", "prefecture", "440000"),  # 东莞市: prefecture with no counties
        ("510104", "county", "510100"),  # 锦江区
    ],
)
def test_units_are_placed_by_what_they_are(code: str, level: str, parent: str) -> None:
    found = {d.code: d for d in divisions()}[code]
    assert (found.level, found.parent_code) == (level, parent)


def test_one_province() -> None:
    rows = list(divisions("51"))
    assert rows[0].code == "510000"
    assert Counter(d.level for d in rows) == {"province": 1, "prefecture": 21, "county": 183}


@pytest.mark.parametrize(
    ("name", "department"),
    [
        ("锦江区", "锦江区委组织部"),
        ("四川省", "四川省委组织部"),
        ("西藏自治区", "西藏自治区党委组织部"),
        ("阿里地区", "阿里地委组织部"),
        ("金堂县", "金堂县委组织部"),
    ],
)
def test_signature_is_the_organization_department(name: str, department: str) -> None:
    assert org_department(name) == department


@pytest.mark.parametrize(
    ("path", "division"),
    [
        ("000000/", "000000"),  # the root is a division of its own
        ("000000/510000/", "510000"),
        ("000000/510000/510100/510104/", "510104"),
        ("000000/510000/510100/510104/510104001/", "510104"),
        ("000000/510000/510100/510104/510104001/510104001001/", "510104"),  # a unit's unit
        ("000000/510000/510000001/", "510000"),  # a unit right under a province
        ("000000/000000001/", "000000"),  # the operator's own unit
        ("", "000000"),  # no tenant has it: the root's, not an IndexError
    ],
)
def test_the_division_a_tenant_is_or_lies_in(path: str, division: str) -> None:
    """The request limiter charges a unit's requests to this division's bucket."""
    assert division_code(path) == division
