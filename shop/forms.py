"""Upload validation: every bad upload becomes a form error, nothing is stored."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.template.defaultfilters import filesizeformat

from similarity.images import BadBox, ImageError, clamp_box, open_image


class SearchForm(forms.Form):
    image = forms.FileField(label="Photo of a dress", help_text="JPEG, PNG or WebP, up to 10 MB.")
    # The box the shopper drew on the preview, in pixels of the uploaded image.
    box_left = forms.IntegerField(required=False, min_value=0, widget=forms.HiddenInput)
    box_top = forms.IntegerField(required=False, min_value=0, widget=forms.HiddenInput)
    box_width = forms.IntegerField(required=False, min_value=0, widget=forms.HiddenInput)
    box_height = forms.IntegerField(required=False, min_value=0, widget=forms.HiddenInput)

    def clean_image(self):
        upload = self.cleaned_data["image"]
        if upload.size == 0:
            raise forms.ValidationError("The file is empty.")
        if upload.size > settings.UPLOAD_MAX_BYTES:
            raise forms.ValidationError(
                f"The file is {filesizeformat(upload.size)}; the limit is {filesizeformat(settings.UPLOAD_MAX_BYTES)}."
            )
        try:
            upload.seek(0)
            image = open_image(upload, max_pixels=settings.IMAGE_MAX_PIXELS, max_bytes=settings.UPLOAD_MAX_BYTES)
        except ImageError as error:
            raise forms.ValidationError(str(error)) from None
        finally:
            upload.seek(0)
        self.image_size = image.size
        return upload

    def clean(self):
        data = super().clean()
        parts = [data.get(name) for name in ("box_left", "box_top", "box_width", "box_height")]
        given = [p is not None for p in parts]
        if not any(given):
            data["bbox"] = None
            return data
        if not all(given):
            raise forms.ValidationError("The box needs a left, top, width and height.")
        if parts[2] == 0 or parts[3] == 0:
            raise forms.ValidationError("The box is empty: draw it around the dress.")
        size = getattr(self, "image_size", None)
        if size is not None:
            try:
                data["bbox"] = clamp_box(tuple(parts), size)
            except BadBox as error:
                raise forms.ValidationError(f"The box does not fit the photo: {error}") from None
        return data
