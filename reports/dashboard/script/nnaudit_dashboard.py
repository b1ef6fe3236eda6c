"""The script ``nnaudit dashboard`` hands to ``streamlit run``; the page is ``reports.dashboard.page``.

It sits alone in this folder because Streamlit puts the script's folder on ``sys.path``: only this
one, distinctly named module becomes importable at top level, not the package's modules.
"""

from reports.dashboard.page import main

main()
