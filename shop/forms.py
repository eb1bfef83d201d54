"""Upload validation: every bad upload becomes a form error, nothing is stored."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.template.defaultfilters import filesizeformat

from shop.models import Category
from similarity.images import BadBox, ImageError, ImageHeader, clamp_box, read_header

if TYPE_CHECKING:
    from shop.models import ProductImage, StreetPhoto

    # django-stubs makes ModelForm generic in its model; the real class cannot be subscripted.
    _PhotoModelForm = forms.ModelForm[ProductImage | StreetPhoto]
else:
    _PhotoModelForm = forms.ModelForm

BOX_FIELDS = ("box_left", "box_top", "box_width", "box_height")


class SearchForm(forms.Form):
    image = forms.FileField(label="Photo of the garment", help_text="JPEG, PNG or WebP, up to 10 MB.")
    # Not required: clients written before categories post none and still search dresses.
    category = forms.ChoiceField(choices=Category.choices, required=False, initial=Category.DRESSES, label="Category")
    # The box around the garment, in pixels of the uploaded image: drawn on the preview (mouse, touch,
    # pen), or typed (keyboards, and browsers without JavaScript). clean() reports every box problem
    # as one form-level error, so the fields show none of their own.
    box_left = forms.IntegerField(required=False, label="Left", widget=forms.NumberInput(attrs={"min": 0}))
    box_top = forms.IntegerField(required=False, label="Top", widget=forms.NumberInput(attrs={"min": 0}))
    box_width = forms.IntegerField(required=False, label="Width", widget=forms.NumberInput(attrs={"min": 1}))
    box_height = forms.IntegerField(required=False, label="Height", widget=forms.NumberInput(attrs={"min": 1}))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["image"].help_text = f"JPEG, PNG or WebP, up to {filesizeformat(settings.UPLOAD_MAX_BYTES)}."

    def clean_category(self) -> str:
        """The chosen category, dresses when none was posted (an unknown one never gets here)."""
        return self.cleaned_data.get("category") or Category.DRESSES

    def clean_image(self) -> UploadedFile[bytes]:
        upload: UploadedFile[bytes] = self.cleaned_data["image"]
        size = upload.size
        assert size is not None  # Django's upload handlers record every upload's size
        if size == 0:
            raise forms.ValidationError("The file is empty.")
        if size > settings.UPLOAD_MAX_BYTES:
            raise forms.ValidationError(
                f"The file is {filesizeformat(size)}; the limit is {filesizeformat(settings.UPLOAD_MAX_BYTES)}."
            )
        # The header only: format, size and orientation. The worker decodes the pixels, so a pixel
        # bomb or a 16 MP photo costs the web process a copy of its bytes (at most UPLOAD_MAX_BYTES),
        # not the hundreds of MB of its decoded pixels.
        try:
            upload.seek(0)
            self.header: ImageHeader = read_header(
                upload, max_pixels=settings.UPLOAD_MAX_PIXELS, max_bytes=settings.UPLOAD_MAX_BYTES
            )
        except ImageError as error:
            raise forms.ValidationError(str(error)) from None
        finally:
            upload.seek(0)
        self.image_size = self.header.upright_size
        return upload

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        assert data is not None  # Form.clean() returns cleaned_data
        # The errors found so far (full_clean() set them up before calling clean()).
        unreadable = [name for name in BOX_FIELDS if name in self.errors]
        if unreadable:
            for name in unreadable:
                del self.errors[name]
            raise forms.ValidationError(
                "The box could not be read: draw it again, or clear it to search the whole photo."
            )
        parts: list[int | None] = [data.get(name) for name in BOX_FIELDS]
        left, top, width, height = parts
        if left is None and top is None and width is None and height is None:
            data["bbox"] = None
            return data
        if left is None or top is None or width is None or height is None:
            raise forms.ValidationError("The box needs a left, top, width and height.")
        if width <= 0 or height <= 0:
            raise forms.ValidationError("The box needs a positive width and height.")
        if left < 0 or top < 0:
            raise forms.ValidationError("The box must start inside the photo.")
        size = getattr(self, "image_size", None)
        if size is not None:
            try:
                data["bbox"] = clamp_box((left, top, width, height), size)
            except BadBox:
                raise forms.ValidationError(
                    f"The box lies outside the photo ({size[0]}×{size[1]} px): draw it on the photo again."
                ) from None
        return data


class CataloguePhotoForm(_PhotoModelForm):
    """Admin photo uploads: the dataset's formats and pixel cap, checked from the header as uploads are."""

    def clean_image(self) -> object:
        # An upload, the unchanged stored file, False (cleared) or None (empty).
        image = self.cleaned_data.get("image")
        if image and "image" in self.changed_data:
            try:
                image.seek(0)
                read_header(image, max_pixels=settings.IMAGE_MAX_PIXELS, max_bytes=settings.DOWNLOAD_MAX_BYTES)
            except ImageError as error:
                raise forms.ValidationError(str(error)) from None
            finally:
                image.seek(0)
        return image
