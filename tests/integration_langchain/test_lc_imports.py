"""The public surface of langchain_oscillink is pinned: changing it must be a deliberate edit here."""

import langchain_oscillink

EXPECTED_ALL = [
    "OscillinkCompressor",
    "OscillinkRetriever",
    "FaissCandidateSource",
    "PackagedMiniLMEmbeddings",
    "__version__",
]


def test_all_is_pinned():
    assert sorted(langchain_oscillink.__all__) == sorted(EXPECTED_ALL)
    for name in EXPECTED_ALL:
        assert getattr(langchain_oscillink, name) is not None


def test_import_does_not_load_optional_packages():
    import subprocess
    import sys

    code = ("import sys, langchain_oscillink; "
            "bad = [m for m in ('langchain_community', 'langchain_classic', 'sentence_transformers', 'torch') "
            "if m in sys.modules]; print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
