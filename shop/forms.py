"""Upload validation: every bad upload becomes a form error, nothing is stored."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.template.defaultfilters import filesizeformat

from similarity.images import BadBox, ImageError, ImageHeader, clamp_box, read_header

BOX_FIELDS = ("box_left", "box_top", "box_width", "box_height")


class SearchForm(forms.Form):
    image = forms.FileField(label="Photo of a dress", help_text="JPEG, PNG or WebP, up to 10 MB.")
    # The box around the dress, in pixels of the uploaded image: drawn on the preview (mouse, touch,
    # pen), or typed (keyboards, and browsers without JavaScript). clean() reports every box problem
    # as one form-level error, so the fields show none of their own.
    box_left = forms.IntegerField(required=False, label="Left", widget=forms.NumberInput(attrs={"min": 0}))
    box_top = forms.IntegerField(required=False, label="Top", widget=forms.NumberInput(attrs={"min": 0}))
    box_width = forms.IntegerField(required=False, label="Width", widget=forms.NumberInput(attrs={"min": 1}))
    box_height = forms.IntegerField(required=False, label="Height", widget=forms.NumberInput(attrs={"min": 1}))

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["image"].help_text = f"JPEG, PNG or WebP, up to {filesizeformat(settings.UPLOAD_MAX_BYTES)}."

    def clean_image(self):
        upload = self.cleaned_data["image"]
        if upload.size == 0:
            raise forms.ValidationError("The file is empty.")
        if upload.size > settings.UPLOAD_MAX_BYTES:
            raise forms.ValidationError(
                f"The file is {filesizeformat(upload.size)}; the limit is {filesizeformat(settings.UPLOAD_MAX_BYTES)}."
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

    def clean(self):
        data = super().clean()
        unreadable = [name for name in BOX_FIELDS if name in self._errors]
        if unreadable:
            for name in unreadable:
                del self._errors[name]
            raise forms.ValidationError(
                "The box could not be read: draw it again, or clear it to search the whole photo."
            )
        parts = [data.get(name) for name in BOX_FIELDS]
        given = [p is not None for p in parts]
        if not any(given):
            data["bbox"] = None
            return data
        if not all(given):
            raise forms.ValidationError("The box needs a left, top, width and height.")
        left, top, width, height = parts
        if width <= 0 or height <= 0:
            raise forms.ValidationError("The box needs a positive width and height.")
        if left < 0 or top < 0:
            raise forms.ValidationError("The box must start inside the photo.")
        size = getattr(self, "image_size", None)
        if size is not None:
            try:
                data["bbox"] = clamp_box(tuple(parts), size)
            except BadBox:
                raise forms.ValidationError(
                    f"The box lies outside the photo ({size[0]}×{size[1]} px): draw it on the photo again."
                ) from None
        return data


class CataloguePhotoForm(forms.ModelForm):
    """Admin photo uploads: the dataset's formats and pixel cap, checked from the header as uploads are."""

    def clean_image(self):
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
