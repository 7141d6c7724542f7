"""What catimg knows about the public quality data sets: each metric's documented range and each set's card.

The converters that turn ``../shared/data`` into long-format measurements are a script
(``python -m catimg.benchmarks.datasets``); what training needs from them at run time lives here: the range of
every published metric (:data:`METRIC_SCALES`, used to put several sets on one joint scale) and the
attribution of every set (:data:`CARDS`, copied into the data card of a router trained on it).
"""

from __future__ import annotations

from typing import Any

#: Known metric scales (lo, hi) by metric name, used to normalise quality for routing.
METRIC_SCALES: dict[str, tuple[float, float]] = {
    "genai_bench_alignment": (1.0, 5.0),
    "tifa_faithfulness": (1.0, 5.0),
    "dsg_consistency": (1.0, 5.0),
    "agiqa3k_mos_align": (0.0, 5.0),
    "agiqa3k_mos_quality": (0.0, 5.0),
    "pqpp_score": (-1.0, 2.0),
}


#: Attribution for every data set (used by the data card of a router trained on it).
CARDS: dict[str, dict[str, Any]] = {
    "genai_bench": {
        "name": "GenAI-Bench (image), 527-prompt release",
        "upstream": (
            "https://github.com/linzhiqiu/t2v_metrics (commit 60ce07b144b9bff24b8dac5317cb28586b1b2509, "
            "genai_image.json)"
        ),
        "license": "Apache-2.0",
        "citations": [
            "Lin et al., Evaluating Text-to-Visual Generation with Image-to-Text Generation "
            "(VQAScore), arXiv 2404.01291",
            "Li et al., GenAI-Bench: Evaluating and Improving Compositional Text-to-Visual Generation, "
            "arXiv 2406.13743",
        ],
        "metric": "genai_bench_alignment",
        "metric_description": (
            "mean of 3 human 1-5 Likert ratings of text-image alignment per image (one image per prompt "
            "and generator)"
        ),
    },
    "agiqa3k": {
        "name": "AGIQA-3K",
        "upstream": "https://github.com/lcysyzxdxc/AGIQA-3k-Database (data.csv)",
        "license": "MIT",
        "citations": [
            "C. Li et al., AGIQA-3K: An Open Database for AI-Generated Image Quality Assessment, IEEE "
            "TCSVT 2023 (arXiv 2306.04717)"
        ],
        "metric": "agiqa3k_mos_align",
        "metric_description": "lab mean opinion score (ITU-R BT.500), normalised",
    },
    "tifa": {
        "name": "TIFA v1.0 human judgments (TIFA-160)",
        "upstream": "https://github.com/Yushi-Hu/tifa (human_annotations_with_scores.json)",
        "license": "Apache-2.0 (COCO captions CC-BY-4.0)",
        "citations": [
            "Y. Hu et al., TIFA: Accurate and Interpretable Text-to-Image Faithfulness Evaluation with "
            "Question Answering, ICCV 2023"
        ],
        "metric": "tifa_faithfulness",
        "metric_description": "mean of 2 human 1-5 faithfulness ratings per image",
    },
    "dsg": {
        "name": "Davidsonian Scene Graph, TIFA-160 Likert annotations",
        "upstream": "https://github.com/j-min/DSG (tifa160-likert-anns.csv)",
        "license": "Apache-2.0",
        "citations": [
            "J. Cho et al., Davidsonian Scene Graph: Improving Reliability in Fine-grained Evaluation "
            "for Text-to-Image Generation, ICLR 2024"
        ],
        "metric": "dsg_consistency",
        "metric_description": "mean of 5 human 1-5 Likert consistency ratings per image",
    },
    "pqpp": {
        "name": (
            "PQPP: prompt performance prediction benchmark (generative scores, train + validation splits)"
        ),
        "upstream": (
            "https://github.com/Eduard6421/PQPP (commit f88432154431d30c3aef2ef331db19ab03c30515, "
            "dataset/train.csv, dataset/validation.csv)"
        ),
        "license": "CC BY 4.0 (attribution required)",
        "citations": [
            "E. Poesina, A. V. Costache, A.-G. Chifu, J. Mothe, R. T. Ionescu, PQPP: A Joint Benchmark "
            "for Text-to-Image Prompt and Query Performance Prediction, CVPR 2025"
        ],
        "metric": "pqpp_score",
        "metric_description": (
            "human ratings on {-1, 0, 1, 2} aggregated per prompt over annotators and images"
        ),
    },
}
