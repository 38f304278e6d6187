"""Tables aligned by terminal cells, cut between characters, colour-free when piped;
relative times."""

import io

import wcwidth
from twisted.trial import unittest

from jobsched._proto import scheduler_pb2 as pb
from jobsched.cli import tables
from jobsched.cli.layout import Column, cut, single_line, table
from jobsched.cli.output import Printer

WIDE = [
    "echo 日本語のテキストです 한국어 中文字符",
    "echo 🚀🚀🚀 launch 👨‍👩‍👧 family 🇯🇵 flag",
    "echo e\u0301e\u0301e\u0301 combining accents and more text to cut",
    "ls",
]


def display_width(text: str) -> int:
    return wcwidth.wcswidth(text)


def column_start(line: str, marker: str) -> int:
    """Display column at which `marker` starts in `line`."""
    return display_width(line[: line.index(marker)])


class CutTests(unittest.TestCase):
    def test_fits_unchanged(self):
        self.assertEqual(cut("日本", 4), "日本")

    def test_cut_to_width_with_an_ellipsis_between_characters(self):
        for text in WIDE:
            for width in range(2, 30):
                result = cut(text, width)
                self.assertLessEqual(display_width(result), width, (text, width))
                if result != text:
                    self.assertTrue(result.endswith("…"))
                    kept = result[:-1]
                    self.assertTrue(text.startswith(kept))
                    # never inside a grapheme cluster (a family emoji, a flag, e + accent)
                    boundaries = {0}
                    for grapheme in wcwidth.iter_graphemes(text):
                        boundaries.add(max(boundaries) + len(grapheme))
                    self.assertIn(len(kept), boundaries, (text, width, result))

    def test_control_characters_never_reach_a_cell(self):
        self.assertEqual(single_line("a\nb\tc\x1b[31m"), "a↵b c [31m")


class TableTests(unittest.TestCase):
    def test_columns_line_up_by_display_width(self):
        rows = [[f"id-{n}", text, "5s ago"] for n, text in enumerate(WIDE)]
        columns = [Column("ID"), Column("COMMAND", flexible=True), Column("CREATED")]
        lines = [line.plain for line in table(columns, rows, width=50)]
        starts = {column_start(line, "5s ago") for line in lines[1:]}
        self.assertEqual(starts, {column_start(lines[0], "CREATED")})
        for line in lines:
            self.assertLessEqual(display_width(line), 50, line)
        self.assertIn("…", lines[1])
        self.assertTrue(lines[4].startswith("id-3  ls "))

    def test_right_aligned_numbers_and_no_trailing_space(self):
        lines = table([Column("N", align_right=True), Column("X")], [["7", ""], ["12", "b"]], 80)
        self.assertEqual([line.plain for line in lines], [" N  X", " 7", "12  b"])

    def test_the_flexible_column_keeps_a_minimum_on_a_narrow_terminal(self):
        lines = table([Column("A" * 40), Column("B", flexible=True)], [["x", "y" * 40]], 30)
        self.assertEqual(lines[1].plain.split()[-1], "y" * 11 + "…")


def printer() -> tuple[Printer, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    return Printer("table", out, err), out, err


class RenderTests(unittest.TestCase):
    def test_ago(self):
        now = 10_000_000
        self.assertEqual(tables.ago(now, now), "just now")
        self.assertEqual(tables.ago(now - 12_000, now), "12s ago")
        self.assertEqual(tables.ago(now - 300_000, now), "5m ago")
        self.assertEqual(tables.ago(now - 3 * 3600_000, now), "3h ago")
        self.assertEqual(tables.ago(now - 2 * 86400_000, now), "2d ago")
        self.assertEqual(tables.ago(now + 5000, now), "just now")

    def test_duration(self):
        self.assertEqual(tables.duration(850), "850ms")
        self.assertEqual(tables.duration(12_340), "12.3s")
        self.assertEqual(tables.duration(245_000), "4m 05s")
        self.assertEqual(tables.duration(7_380_000), "2h 03m")

    def test_piped_output_has_no_colour_and_keeps_the_words(self):
        out_printer, out, _err = printer()
        jobs = [pb.JobInfo(job_id="j1", command="echo [bold]x[/bold] :smile:", status=1)]
        tables.job_list(out_printer, jobs, 5, True, now=0)
        text = out.getvalue()
        self.assertNotIn("\x1b[", text)
        self.assertIn("echo [bold]x[/bold] :smile:", text)  # no markup, no emoji codes
        self.assertIn("Showing 1 of 5 jobs", text)
        self.assertIn("(Use --all to fetch all pages)", text)
        self.assertRegex(text, r"j1\s+PENDING\s+-\s+echo")

    def test_empty_list(self):
        out_printer, out, _err = printer()
        tables.job_list(out_printer, [], 0, False, now=0)
        self.assertEqual(out.getvalue(), "No jobs found.\n")

    def test_status_lines_and_indented_output(self):
        out_printer, out, _err = printer()
        job = pb.GetJobStatusResponse(
            job_id="j", status=pb.JOB_STATUS_COMPLETED, output="a\nb\n", error="w\n", exit_code=0
        )
        tables.job_status(out_printer, job, now=0)
        lines = out.getvalue().splitlines()
        self.assertIn("Job ID:     j", lines)
        self.assertIn("Status:     COMPLETED", lines)
        self.assertEqual(lines[-5:], ["Output:", "  a", "  b", "Error:", "  w"])

    def test_cluster_status_rows(self):
        out_printer, out, _err = printer()
        response = pb.GetClusterStatusResponse(
            current_term=3,
            leader_id=1,
            nodes=[
                pb.NodeInfo(node_id=1, address="a:1", is_alive=True, role="leader"),
                pb.NodeInfo(node_id=2, address="a:2", is_alive=False, draining=True),
            ],
        )
        tables.cluster_status(out_printer, response)
        text = out.getvalue()
        self.assertIn("Term:    3\nLeader:  node 1\n", text)
        self.assertRegex(text, r"1  a:1\s+leader\s+\[\+\] alive\n")
        self.assertRegex(text, r"2  a:2\s+unknown\s+\[-\] dead \(draining\)\n")

    def test_log_shows_the_compaction_line(self):
        out_printer, out, _err = printer()
        response = pb.GetRaftLogEntriesResponse(
            entries=[pb.RaftLogEntryInfo(index=1001, term=2, is_committed=False)],
            commit_index=1000,
            last_log_index=1001,
            first_available_index=1001,
        )
        tables.raft_log(out_printer, response)
        text = out.getvalue()
        self.assertIn("entries before index 1001 are in the snapshot", text)
        self.assertRegex(
            text, r"INDEX\s+TERM\s+COMMITTED\s+TYPE\s+DETAILS\n\s*1001\s+2\s+no\s+Noop\n"
        )
