from django.apps import AppConfig


class AnnotationsConfig(AppConfig):
    name = "annotations"
    verbose_name = "Annotation"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_out

        from annotations.events import close_sockets_on_logout

        user_logged_out.connect(close_sockets_on_logout, dispatch_uid="close_sockets_on_logout")
