from django.core.management.base import BaseCommand

from rules.retention import events_prunable, events_prune


class Command(BaseCommand):
    help = ("Delete the processed and rejected inbound events past their program's event_retention_days now, "
            "as beat does nightly; with --dry-run, only count them.")

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="count what would be deleted, delete nothing")

    def handle(self, *args, dry_run, **options):
        prunable = events_prunable()
        if not prunable:
            self.stdout.write("No program sets event_retention_days: every event is kept.")
            return
        for program, days, count in prunable:
            self.stdout.write(f"{program.slug}: kept {days} days; {count} events older")
        if dry_run:
            self.stdout.write(f"{sum(count for _program, _days, count in prunable)} events would be deleted (dry run)")
            return
        self.stdout.write(f"{events_prune()} events deleted")
