"""Write the tiny files of real-world quirks under tests/data/<format>/quirks/.

Each is a few lines of a committed sample (Schleyer ``dish01/3.csv``, FIMTrack
``table.csv``, the Choreography ``.spine``/``.outline`` pair) rewritten the way a
lab's tool or a spreadsheet writes it. Run from the repository root:
``python tests/data/make_quirk_files.py``; the files are committed, so tests never
run this. ``tests/test_reader_quirks.py`` says what each one must read as.
"""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).parent
BOM = b"\xef\xbb\xbf"


def write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def cells(line: str) -> list[str]:
    return line.split(",")


def schleyer() -> None:
    out = DATA / "schleyer" / "quirks"
    lines = (DATA / "schleyer" / "dish01" / "3.csv").read_text().splitlines()[:4]
    text = "\n".join(lines) + "\n"
    write(out / "bom_crlf" / "3.csv", BOM + text.replace("\n", "\r\n").encode())
    write(out / "cr_only" / "3.csv", text.replace("\n", "\r"))
    write(out / "no_final_newline" / "3.csv", text.rstrip("\n"))
    write(out / "trailing_separator" / "3.csv", "".join(line + ",\n" for line in lines))
    # a spreadsheet re-save in a European locale: ';' separators, decimal commas
    write(out / "semicolon" / "3.csv", "".join(";".join(c.strip().replace(".", ",") for c in cells(line)) + "\r\n"
                                            for line in lines))
    write(out / "tab" / "3.csv", "".join("\t".join(c.strip() for c in cells(line)) + "\n" for line in lines))
    # single missing cells: a midline x as 'NA' (row 2), a contour vertex empty (row 3),
    # an attribute '-nan' (row 4, not a geometry column: the step stays valid)
    rows = [cells(line) for line in lines]
    rows[1][5] = "NA   "
    rows[2][30] = "   "
    rows[3][72] = "-nan"
    write(out / "single_cells" / "3.csv", "".join(",".join(r) + "\n" for r in rows))
    # a missing frame index between two known frames (it can only be frame 3)
    rows = [cells(line) for line in lines]
    rows[2][0] = "nan"
    write(out / "missing_frame" / "3.csv", "".join(",".join(r) + "\n" for r in rows))


def fimtrack() -> None:
    out = DATA / "fimtrack" / "quirks"
    lines = (DATA / "fimtrack" / "table.csv").read_text().splitlines()
    text = "\n".join(lines) + "\n"
    write(out / "bom_crlf.csv", BOM + text.replace("\n", "\r\n").encode())
    write(out / "cr_only.csv", text.replace("\n", "\r"))
    write(out / "no_final_newline.csv", text.rstrip("\n"))
    write(out / "trailing_separator.csv", "".join(line + ",\n" for line in lines))
    write(out / "semicolon.csv", "".join(";".join(c.replace(".", ",") for c in cells(line)) + "\r\n"
                                         for line in lines))
    write(out / "tab.csv", "".join("\t".join(cells(line)) + "\n" for line in lines))
    # missing-value tokens for the empty cells, padded; one spine cell of larva 3 missing
    tokens = ["na", " NA ", "NaN", "nan  ", "-nan", "N/A"]
    rows, k = [], 0
    for line in lines:
        row = cells(line)
        for i in range(1, len(row)):
            if row[0] and not row[i]:
                row[i], k = tokens[k % len(tokens)], k + 1
        if row[0] == "spinepoint_2_y(2)":
            row[2] = "na"
        rows.append(",".join(row))
    write(out / "missing_tokens.csv", "\n".join(rows) + "\n")


def chore() -> None:
    out = DATA / "chore" / "quirks"
    spine = next((DATA / "chore").glob("*.spine"))
    outline = spine.with_suffix(".outline")
    stem = "20150701_105504@FCF@UAS@t15@r@100"
    s, o = spine.read_text(), outline.read_text()
    write(out / "bom_crlf" / f"{stem}.spine", BOM + s.replace("\n", "\r\n").encode())
    write(out / "bom_crlf" / f"{stem}.outline", BOM + o.replace("\n", "\r\n").encode())
    write(out / "cr_only" / f"{stem}.spine", s.replace("\n", "\r"))
    write(out / "cr_only" / f"{stem}.outline", o.rstrip("\n"))  # and no final newline
    write(out / "trailing_space" / f"{stem}.spine", s.replace("\n", " \n"))
    write(out / "trailing_space" / f"{stem}.outline", o.replace("\n", "\t\n"))
    rows = [line.split(" ") for line in s.splitlines()]
    rows[1][7] = "NA"          # one spine coordinate of larva 12 at its 2nd step
    rows[6][3:] = ["nan"] * (len(rows[6]) - 3)   # a whole spine row written as nan
    rows[8][2] = "na"          # no time: the row cannot be placed
    write(out / "missing_tokens" / f"{stem}.spine", "\n".join(" ".join(r) for r in rows) + "\n")
    outline_rows = [line.split(" ") for line in o.splitlines()]
    outline_rows[2][5] = "-nan"  # a hole in an outline: the whole outline is missing
    write(out / "missing_tokens" / f"{stem}.outline", "\n".join(" ".join(r) for r in outline_rows) + "\n")


if __name__ == "__main__":
    schleyer()
    fimtrack()
    chore()
