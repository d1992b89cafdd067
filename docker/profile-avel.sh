# Installed as /etc/profile.d/avel.sh by docker/Dockerfile.{gpu,cpu}.
# Login shells (`bash -l`: the Ray cluster launcher's `docker exec`, KubeRay with
# ENABLE_LOGIN_SHELL) reset PATH in /etc/profile, which would hide the image's virtualenv;
# this puts it back in front so `avel`, `ray` and `python` are the locked ones.
export VIRTUAL_ENV=/opt/venv
case ":${PATH}:" in
    *":/opt/venv/bin:"*) ;;
    *) export PATH="/opt/venv/bin:${PATH}" ;;
esac
