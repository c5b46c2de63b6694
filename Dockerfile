# a0gw in a container.  Run it with the host's shared memory and process ids,
# so it reaches the same AlephZero topics as the robot's processes:
#   docker run --rm --ipc=host --pid=host -p 24880:24880 a0gw
FROM python:3.11-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ make \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .
RUN pip install --no-cache-dir .

EXPOSE 24880
CMD ["a0gw", "serve", "--host", "0.0.0.0"]
