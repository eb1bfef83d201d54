"""Upload validation: every bad upload becomes a form error, nothing is stored."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.template.defaultfilters import filesizeformat

from similarity.images import BadBox, ImageError, clamp_box, detected_format, open_image


BOX_FIELDS = ("box_left", "box_top", "box_width", "box_height")


class SearchForm(forms.Form):
    image = forms.FileField(label="Photo of a dress", help_text="JPEG, PNG or WebP, up to 10 MB.")
    # The box the shopper drew on the preview, in pixels of the uploaded image. Hidden fields
    # show no errors of their own: clean() reports every box problem as one form-level error.
    box_left = forms.IntegerField(required=False, widget=forms.HiddenInput)
    box_top = forms.IntegerField(required=False, widget=forms.HiddenInput)
    box_width = forms.IntegerField(required=False, widget=forms.HiddenInput)
    box_height = forms.IntegerField(required=False, widget=forms.HiddenInput)

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
            self.image_format = detected_format(upload)
        except ImageError as error:
            raise forms.ValidationError(str(error)) from None
        finally:
            upload.seek(0)
        self.image_size = image.size
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
