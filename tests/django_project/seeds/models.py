"""The models the seed projects send: simple-history's historical record, viewflow's process/task.

``HistoricalPoll`` has the fields that simple-history's ``HistoricalRecords``
generates for ``Poll`` (written out here: the library is not installed);
``Process`` and ``Task`` the fields of viewflow's base models that its
signals' receivers read.
"""

from django.conf import settings
from django.db import models
from django.utils import timezone


class Poll(models.Model):
    """A tracked model."""

    question = models.CharField(max_length=200)
    pub_date = models.DateTimeField()


class HistoricalPoll(models.Model):
    """One historical version of a Poll, as simple-history stores it."""

    id = models.BigIntegerField(db_index=True)  # the tracked row's pk
    question = models.CharField(max_length=200)
    pub_date = models.DateTimeField()
    history_id = models.AutoField(primary_key=True)
    history_date = models.DateTimeField()
    history_change_reason = models.CharField(max_length=100, null=True)
    history_type = models.CharField(
        max_length=1, choices=[("+", "Created"), ("~", "Changed"), ("-", "Deleted")]
    )
    history_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )


class Process(models.Model):
    """A running flow (viewflow.models.Process)."""

    flow_class = models.CharField(max_length=250)
    status = models.CharField(max_length=50, default="NEW")
    created = models.DateTimeField(default=timezone.now)
    finished = models.DateTimeField(null=True, blank=True)


class Task(models.Model):
    """One step of a process (viewflow.models.Task)."""

    process = models.ForeignKey(Process, on_delete=models.CASCADE)
    flow_task = models.CharField(max_length=255)
    status = models.CharField(max_length=50, default="NEW")
    created = models.DateTimeField(default=timezone.now)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    comments = models.TextField(blank=True, null=True)
