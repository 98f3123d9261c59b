"""Deleting items or projects removes their image and model files, once the deletion commits,
whoever deletes (services, admin, API, commands all call `items_delete`/`projects_delete`)."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import pytest
from django.db import transaction
from django.urls import reverse
from PIL import Image

from annotations import queue, services
from annotations.models import Item, Project
from curation.dataset_versions import version_create
from curation.services import train_project_once

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("fast_passwords")]


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (6, 6), "blue").save(buffer, format="PNG")
    return buffer.getvalue()


def image_items(project: Project, n: int) -> list[Item]:
    items = []
    for i in range(n):
        item = Item(project=project, external_id=f"img{i}.png", image_format="PNG")
        item.image_width = item.image_height = 6
        item.image.save(f"img{i}.png", io.BytesIO(png()), save=False)
        item.save()
        items.append(item)
    services.add_items_counted(project, n)
    return items


def path_of(item: Item, media: Path) -> Path:
    return media / item.image.name


def test_deleted_items_lose_their_image_files_after_the_commit(
    data_dir, image_project, django_capture_on_commit_callbacks
):
    media = data_dir / "media"
    gone, kept = image_items(image_project, 2)
    assert path_of(gone, media).exists()
    with django_capture_on_commit_callbacks(execute=True):
        services.items_delete(Item.objects.filter(pk=gone.pk))
        assert path_of(gone, media).exists()  # not before the commit
    assert not path_of(gone, media).exists()
    assert path_of(kept, media).exists()


def test_a_deletion_that_rolls_back_keeps_the_files(
    data_dir, image_project, django_capture_on_commit_callbacks
):
    media = data_dir / "media"
    (item,) = image_items(image_project, 1)
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        services.items_delete(Item.objects.filter(pk=item.pk))
        raise RuntimeError("something later in the same transaction failed")
    assert callbacks == []
    assert Item.objects.filter(pk=item.pk).exists()
    assert path_of(item, media).exists()


def test_a_deleted_project_loses_its_images_model_and_version_files(
    data_dir, project, annotator, django_capture_on_commit_callbacks
):
    media = data_dir / "media"
    (picture,) = image_items(project, 1)
    for item in queue.next_items(project=project, user=annotator, count=3):
        services.annotation_submit(
            item=item, annotator=annotator, labels=["positive"], client_uuid=uuid.uuid4()
        )
    version = train_project_once(project)
    assert version is not None and version.path.exists()
    folder = version.path.parent
    dataset_version = version_create(project)
    assert dataset_version.path.exists()
    with django_capture_on_commit_callbacks(execute=True):
        services.projects_delete(Project.objects.filter(pk=project.pk))
    assert not folder.exists()
    assert not dataset_version.path.parent.exists()
    assert not path_of(picture, media).exists()


def test_deleting_items_and_projects_in_the_admin_removes_their_files(
    client, superuser, data_dir, image_project, django_capture_on_commit_callbacks
):
    media = data_dir / "media"
    one, two = image_items(image_project, 2)
    client.force_login(superuser)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:annotations_item_delete", args=[one.pk]), {"post": "yes"}
        )
    assert response.status_code == 302
    assert not path_of(one, media).exists() and path_of(two, media).exists()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:annotations_project_delete", args=[image_project.pk]), {"post": "yes"}
        )
    assert response.status_code == 302
    assert not Project.objects.filter(pk=image_project.pk).exists()
    assert not path_of(two, media).exists()
