from django.core.management.base import BaseCommand, CommandError

from ledger.audit import CHECKS, run_audit


class Command(BaseCommand):
    help = "Check every ledger invariant for every member. Exit 0 when all hold, 1 with a report otherwise."

    def add_arguments(self, parser):
        parser.add_argument("--limit", type=int, default=1000, help="Report at most this many rows per check.")

    def handle(self, *args, limit, **options):
        if limit < 1:
            raise CommandError(f"--limit must be at least 1, got {limit}")
        found = run_audit(limit_per_check=limit)
        if not found:
            self.stdout.write(self.style.SUCCESS(f"ledger audit: all {len(CHECKS)} checks hold"))
            return
        for discrepancy in found:
            self.stdout.write(str(discrepancy))
        by_check = {}
        for discrepancy in found:
            by_check[discrepancy.check] = by_check.get(discrepancy.check, 0) + 1
        self.stderr.write(
            self.style.ERROR(f"ledger audit: {len(found)} discrepancies ")
            + ", ".join(f"{name} ({count}): {CHECKS[name][1]}" for name, count in by_check.items())
        )
        raise SystemExit(1)
