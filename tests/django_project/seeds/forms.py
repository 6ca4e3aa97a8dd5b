"""aldryn-accounts' sign-up form, the ``form`` of ``user_signed_up``."""

from django import forms


class SignupForm(forms.Form):
    """Username, email and the password twice (password widgets: never sent)."""

    username = forms.CharField(max_length=30)
    email = forms.EmailField()
    password1 = forms.CharField(widget=forms.PasswordInput)
    password2 = forms.CharField(widget=forms.PasswordInput)
