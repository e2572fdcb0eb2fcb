from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('bill_integration', '0004_auth_methods'),
    ]

    operations = [
        migrations.CreateModel(
            name='CallCount',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('fingerprint', models.CharField(max_length=64, verbose_name='developer key fingerprint')),
                ('minute', models.DateTimeField(verbose_name='minute')),
                ('kind', models.CharField(max_length=16, verbose_name='kind')),
                ('count', models.BigIntegerField(default=0, verbose_name='count')),
            ],
            options={
                'verbose_name': 'BILL call count',
                'verbose_name_plural': 'BILL call counts',
                'indexes': [models.Index(fields=['minute'], name='bill_call_count_minute')],
                'constraints': [models.UniqueConstraint(fields=('fingerprint', 'minute', 'kind'), name='bill_call_count_bucket')],
            },
        ),
    ]
