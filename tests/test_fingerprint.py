from service.correlate.fingerprint import fingerprint, group_key, group_keys, groups_of, valid_fingerprint


def test_fingerprint_matches_prometheus_reference_vectors() -> None:
    # prometheus/common model: LabelsToSignature test vectors (same FNV-1a 64 walk).
    labels = {"name": "garland, briggs", "fear": "love is not enough"}
    assert int(fingerprint(labels), 16) == 5799056148416392346
    assert int(fingerprint({}), 16) == 14695981039346656037


def test_fingerprint_is_16_lowercase_hex_and_order_independent() -> None:
    a = fingerprint({"alertname": "ApiDown", "namespace": "aragora"})
    b = fingerprint(dict(reversed(list({"alertname": "ApiDown", "namespace": "aragora"}.items()))))
    assert a == b
    assert valid_fingerprint(a)
    assert a != fingerprint({"alertname": "ApiDown", "namespace": "other"})


def test_fingerprint_separates_names_from_values() -> None:
    # Without the 0xFF separators these two would hash the same bytes.
    assert fingerprint({"ab": "c"}) != fingerprint({"a": "bc"})


def test_group_key_uses_only_group_by_labels() -> None:
    k1, labels1 = group_key({"alertname": "X", "namespace": "n", "pod": "a"}, ["alertname", "namespace"])
    k2, _ = group_key({"alertname": "X", "namespace": "n", "pod": "b"}, ["alertname", "namespace"])
    k3, _ = group_key({"alertname": "X", "namespace": "m", "pod": "a"}, ["alertname", "namespace"])
    assert k1 == k2 != k3
    assert labels1 == {"alertname": "X", "namespace": "n"}


def test_group_key_treats_empty_label_as_absent_and_dots_as_all_labels() -> None:
    assert group_key({"alertname": "X", "cluster": ""}, ["alertname", "cluster"]) == group_key(
        {"alertname": "X"}, ["alertname", "cluster"]
    )
    k1, _ = group_key({"alertname": "X", "pod": "a"}, ["..."])
    k2, _ = group_key({"alertname": "X", "pod": "b"}, ["..."])
    assert k1 != k2


def test_group_keys_are_each_label_sets_group_key() -> None:
    many = [
        {"alertname": "A", "cluster": "c1", "pod": "p1"},
        {"alertname": "A", "cluster": "c1", "pod": "p2"},  # the same group
        {"alertname": "A", "cluster": ""},  # empty is absent...
        {"alertname": "A"},  # ...so the same key as this one
        {"alertname": "B", "cluster": "c1"},
    ]
    for group_by in (["alertname", "cluster"], ["..."], ["namespace"]):
        assert group_keys(many, group_by) == [group_key(labels, group_by)[0] for labels in many]
        assert groups_of(many, group_by) == [group_key(labels, group_by) for labels in many]
    keys = group_keys(many, ["alertname", "cluster"])
    assert keys[0] == keys[1] and keys[2] == keys[3] and len(set(keys)) == 3
